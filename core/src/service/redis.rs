//! Redis cache backend logic (issue 4): owned by helper H.
