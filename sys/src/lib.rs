//! Unsafe kernel interfaces. Every `unsafe` block of the project lives in this crate.
