"""Results into the PACS: the SR and Secondary Captures of a screening, stored, and the outbox
for what the PACS refused."""
