//! TODO(owner): see the issue brief.
