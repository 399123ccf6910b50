//! SQLite cache backend (issue 4): owned by helper G.
