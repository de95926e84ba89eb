//! runops-server (being written).
