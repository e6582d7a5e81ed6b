"""What kproxy tells its operator: access log, audit events, metrics, probes."""
