//! Deployed-state file (SKELETON: owned by the plan/state owner).
