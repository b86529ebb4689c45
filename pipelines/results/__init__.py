"""Results out of a screening: into the PACS (`writeback`: the SR and Secondary Captures,
stored) and to the worklist (`notify`, `senders`: HL7 v2 over MLLP or FHIR), each with an
outbox (`outbox`) for what its destination did not take, delivered by the next run; both
made from the same study findings (`findings`)."""
