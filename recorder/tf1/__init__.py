"""TF1-style capture for MonitoredSession: SummaryHook (summary_hook.py, a drop-in for wandb's
WandbHook) and DumpHook (dump_hook.py, a drop-in for tfdbg's DumpingDebugHook), with the
exact global-step read they share (global_step.py), DumpHook's staging and ingest
(dump_capture.py) and its in-memory capture (native_capture.py, native/capture.cc,
capture_records.py)."""
