//! Prometheus registry and HTTP exporter.
