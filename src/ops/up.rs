//! `activity-store up`: the embedded default.
