//! NVMe/TCP transport: the sans-IO PDU codec and connection state machine.
pub mod conn;
pub mod host;
pub mod pdu;

#[cfg(test)]
mod tests;
