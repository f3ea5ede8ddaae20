//! NVMe/TCP transport.
