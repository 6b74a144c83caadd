//! `iolens run`: preflight, load probes, serve metrics until a signal.
