//! runops-agent (being written).
