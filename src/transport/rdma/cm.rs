//! The RDMA CM private data of NVMe/RDMA (NVMe RDMA Transport Specification,
//! "RDMA_CM_REQUEST", "RDMA_CM_ACCEPT", "RDMA_CM_REJECT"): what a host asks
//! for when it connects a queue, and what the target answers.

use crate::nvme::{le16, put16};

/// Record format 1.0, the only one.
pub const RECFMT: u16 = 0;
/// Bytes of the request's private data the host sends.
pub const REQUEST_LEN: usize = 32;
/// Bytes of the accept's private data.
pub const ACCEPT_LEN: usize = 32;

/// RDMA CM reject status codes (RDMA_CM_REJECT STS).
pub mod sts {
    pub const INVALID_LEN: u16 = 0x01;
    pub const INVALID_RECFMT: u16 = 0x02;
    pub const INVALID_QID: u16 = 0x03;
    pub const INVALID_HSQSIZE: u16 = 0x04;
    pub const INVALID_HRQSIZE: u16 = 0x05;
    pub const NO_RESOURCES: u16 = 0x06;
    pub const INVALID_IRD: u16 = 0x07;
    pub const INVALID_ORD: u16 = 0x08;
}

/// A queue's connect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRequest {
    pub qid: u16,
    /// Entries of the host's receive queue (responses it can take).
    pub hrqsize: u16,
    /// The host's submission queue size, zero-based (SQSIZE).
    pub hsqsize: u16,
}

impl ConnectRequest {
    /// Receive buffers the target posts: one per submission queue entry.
    pub fn depth(&self) -> u32 {
        self.hsqsize as u32 + 1
    }
}

/// What the target allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Admin queue entries at most.
    pub admin_depth: u32,
    /// I/O queue entries at most (MQES + 1).
    pub io_depth: u32,
    /// I/O queues per controller at most.
    pub io_queues: u16,
}

/// Checks a connect request's private data; `Err` is the reject status.
pub fn parse(private: &[u8], lim: &Limits) -> Result<ConnectRequest, u16> {
    // The transport may pad the private data (RoCE delivers 56 bytes), never shorten it.
    if private.len() < REQUEST_LEN {
        return Err(sts::INVALID_LEN);
    }
    if le16(private, 0) != RECFMT {
        return Err(sts::INVALID_RECFMT);
    }
    let r = ConnectRequest {
        qid: le16(private, 2),
        hrqsize: le16(private, 4),
        hsqsize: le16(private, 6),
    };
    if r.qid > lim.io_queues {
        return Err(sts::INVALID_QID);
    }
    let max = if r.qid == 0 {
        lim.admin_depth
    } else {
        lim.io_depth
    };
    // SQSIZE 0 (one entry) is not a queue; beyond the limit is not allowed.
    if r.hsqsize == 0 || r.depth() > max {
        return Err(sts::INVALID_HSQSIZE);
    }
    // The host must have room for a response to every command it can submit.
    if (r.hrqsize as u32) < r.depth() {
        return Err(sts::INVALID_HRQSIZE);
    }
    Ok(r)
}

/// The accept's private data: record format and the controller's receive
/// queue size.
pub fn accept(crqsize: u16) -> [u8; ACCEPT_LEN] {
    let mut b = [0u8; ACCEPT_LEN];
    put16(&mut b, 0, RECFMT);
    put16(&mut b, 2, crqsize);
    b
}

/// The reject's private data: record format and status.
pub fn reject(status: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    put16(&mut b, 0, RECFMT);
    put16(&mut b, 2, status);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(recfmt: u16, qid: u16, hrqsize: u16, hsqsize: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        for (at, v) in [(0, recfmt), (2, qid), (4, hrqsize), (6, hsqsize)] {
            if at + 2 <= len {
                put16(&mut b, at, v);
            }
        }
        b
    }

    const LIM: Limits = Limits {
        admin_depth: 32,
        io_depth: 128,
        io_queues: 8,
    };

    #[test]
    fn the_kernel_hosts_requests_are_accepted() {
        // Admin queue: hrqsize 32, hsqsize 31; I/O queue of 128: hrqsize 128, hsqsize 127.
        let a = parse(&req(0, 0, 32, 31, 32), &LIM).unwrap();
        assert_eq!((a.qid, a.depth()), (0, 32));
        let io = parse(&req(0, 3, 128, 127, 56), &LIM).unwrap();
        assert_eq!((io.qid, io.depth(), io.hrqsize), (3, 128, 128));
    }

    #[test]
    fn each_bad_field_gets_its_reject_status() {
        assert_eq!(parse(&req(0, 1, 32, 31, 31), &LIM), Err(sts::INVALID_LEN));
        assert_eq!(parse(&[], &LIM), Err(sts::INVALID_LEN));
        assert_eq!(
            parse(&req(1, 1, 32, 31, 32), &LIM),
            Err(sts::INVALID_RECFMT)
        );
        assert_eq!(parse(&req(0, 9, 32, 31, 32), &LIM), Err(sts::INVALID_QID));
        assert_eq!(
            parse(&req(0, 0, 64, 32, 32), &LIM),
            Err(sts::INVALID_HSQSIZE)
        );
        assert_eq!(
            parse(&req(0, 1, 256, 128, 32), &LIM),
            Err(sts::INVALID_HSQSIZE)
        );
        assert_eq!(
            parse(&req(0, 1, 16, 0, 32), &LIM),
            Err(sts::INVALID_HSQSIZE)
        );
        assert_eq!(
            parse(&req(0, 1, 31, 31, 32), &LIM),
            Err(sts::INVALID_HRQSIZE)
        );
    }

    #[test]
    fn accept_and_reject_layouts() {
        let a = accept(128);
        assert_eq!(a.len(), 32);
        assert_eq!((le16(&a, 0), le16(&a, 2)), (0, 128));
        assert!(a[4..].iter().all(|&b| b == 0));
        assert_eq!(reject(sts::NO_RESOURCES), [0, 0, 6, 0]);
    }
}
