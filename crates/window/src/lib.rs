//! Per-symbol sliding-window analytics (placeholder while issue 3 is built).
