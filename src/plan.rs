//! Pure planner (SKELETON: owned by the plan/state owner).
