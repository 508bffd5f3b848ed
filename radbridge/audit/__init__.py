"""Audit replay: signed historical reports in, the AI draft beside each signed impression out (``radbridge audit``).

sources.py (files, a Kafka topic, a FHIR server -> Envelopes), cases.py (one scored case per report),
writer.py (the audit folder: append-as-you-go files, resume, run.json), run.py (the loop), stats.py (bootstrap),
report_html.py (the self-contained report), compare.py (two audits of the same history).
"""
