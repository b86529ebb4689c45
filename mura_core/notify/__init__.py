"""Telling the worklist: each screened study's finding sent to a RIS as HL7 v2.5 or FHIR R4.

The recipe, top to bottom (one module per step; this package's `__init__` imports none of
them, so `summary.json` readers do not load hl7apy or fhir.resources):

1. **Where** (`address`, `config`): `--notify mllp://HOST:PORT` or
   `--notify fhir+https://HOST/BASE` parsed into a `NotifyAddress`, with the priority a
   flagged study is announced with (HL7 table 0027, default `S`), in a `NotifyConfig`.
2. **What** (`notice`): a screening run's findings, with the real StudyInstanceUID and
   AccessionNumber from the PACS listing's headers, become `Notice`s (no patient name or ID).
3. **Which message** (`ids`): its control ID hashes the study's UID, its instance set and
   the model, as the SR written back does: a resend is the same message.
4. **As HL7** (`hl7`): an ORU^R01 built and validated with hl7apy's v2.5 model; the
   receiver's ACK read back (`AA` taken; `AE`/`AR` not).
5. **As FHIR** (`fhir`): a transaction Bundle (Device, Observation, DiagnosticReport),
   each resource validated with fhir.resources' R4B models, conditional creates.
6. **What happened** (`summary`): a `NotifySummary` of counts and the reasons of failures,
   for `summary.json`, the report and (counts only) MLflow.

Sending, the outbox and the resend are `pipelines.results.notify`'s (sockets, files).
"""
