//! User-space NVMe/TCP initiator library.
