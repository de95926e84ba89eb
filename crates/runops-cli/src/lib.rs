//! runops-cli (being written).
