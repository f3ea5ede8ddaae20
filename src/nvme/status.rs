//! NVMe completion status values.

use std::fmt;

/// The 15-bit status field of a completion (without the phase bit):
/// SC bits 7:0, SCT bits 10:8, CRD bits 12:11, More bit 13, DNR bit 14.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Status(pub u16);

const fn st(sct: u16, sc: u16) -> Status {
    Status((sct << 8) | sc)
}

impl Status {
    pub const SUCCESS: Status = st(0, 0x00);
    // Generic command status (SCT 0).
    pub const INVALID_OPCODE: Status = st(0, 0x01);
    pub const INVALID_FIELD: Status = st(0, 0x02);
    pub const CID_CONFLICT: Status = st(0, 0x03);
    pub const DATA_TRANSFER_ERROR: Status = st(0, 0x04);
    pub const INTERNAL_ERROR: Status = st(0, 0x06);
    pub const ABORT_REQUESTED: Status = st(0, 0x07);
    pub const ABORTED_SQ_DELETION: Status = st(0, 0x08);
    pub const ABORTED_FAILED_FUSED: Status = st(0, 0x09);
    pub const ABORTED_MISSING_FUSED: Status = st(0, 0x0A);
    pub const INVALID_NAMESPACE: Status = st(0, 0x0B);
    pub const COMMAND_SEQUENCE_ERROR: Status = st(0, 0x0C);
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: Status = st(0, 0x0D);
    pub const INVALID_SGL_COUNT: Status = st(0, 0x0E);
    pub const DATA_SGL_LENGTH_INVALID: Status = st(0, 0x0F);
    pub const SGL_TYPE_INVALID: Status = st(0, 0x11);
    pub const SGL_OFFSET_INVALID: Status = st(0, 0x16);
    pub const HOST_ID_INCONSISTENT: Status = st(0, 0x18);
    pub const KEEP_ALIVE_EXPIRED: Status = st(0, 0x19);
    pub const KEEP_ALIVE_INVALID: Status = st(0, 0x1A);
    pub const COMMAND_ABORTED_PREEMPT: Status = st(0, 0x1B);
    pub const LBA_OUT_OF_RANGE: Status = st(0, 0x80);
    pub const CAPACITY_EXCEEDED: Status = st(0, 0x81);
    pub const NAMESPACE_NOT_READY: Status = st(0, 0x82);
    /// The command was interrupted; the host may retry it (no DNR).
    pub const COMMAND_INTERRUPTED: Status = st(0, 0x21);
    pub const RESERVATION_CONFLICT: Status = st(0, 0x83);
    // Command specific status (SCT 1).
    pub const ABORT_LIMIT_EXCEEDED: Status = st(1, 0x03);
    pub const INVALID_INTERRUPT_VECTOR: Status = st(1, 0x08);
    pub const AER_LIMIT_EXCEEDED: Status = st(1, 0x05);
    pub const INVALID_LOG_PAGE: Status = st(1, 0x09);
    pub const FEATURE_NOT_SAVEABLE: Status = st(1, 0x0D);
    pub const FEATURE_NOT_CHANGEABLE: Status = st(1, 0x0E);
    pub const FEATURE_NOT_NS_SPECIFIC: Status = st(1, 0x0F);
    pub const CONFLICTING_ATTRIBUTES: Status = st(1, 0x80);
    pub const COMMAND_SIZE_LIMIT_EXCEEDED: Status = st(1, 0x83);
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = st(1, 0x80);
    pub const CONNECT_CONTROLLER_BUSY: Status = st(1, 0x81);
    pub const CONNECT_INVALID_PARAMETERS: Status = st(1, 0x82);
    pub const CONNECT_RESTART_DISCOVERY: Status = st(1, 0x83);
    pub const CONNECT_INVALID_HOST: Status = st(1, 0x84);
    // Media and data integrity errors (SCT 2).
    pub const WRITE_FAULT: Status = st(2, 0x80);
    pub const UNRECOVERED_READ_ERROR: Status = st(2, 0x81);
    pub const COMPARE_FAILURE: Status = st(2, 0x85);
    pub const ACCESS_DENIED: Status = st(2, 0x86);

    pub const DNR_BIT: u16 = 1 << 14;
    pub const MORE_BIT: u16 = 1 << 13;

    /// The same status with Do Not Retry set.
    pub const fn dnr(self) -> Status {
        Status(self.0 | Self::DNR_BIT)
    }
    pub const fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }
    pub const fn is_success(self) -> bool {
        self.0 & 0x7FF == 0
    }
    pub const fn has_dnr(self) -> bool {
        self.0 & Self::DNR_BIT != 0
    }
    /// Status code type and code only (no DNR/More/CRD).
    pub const fn code(self) -> Status {
        Status(self.0 & 0x7FF)
    }

    pub fn name(self) -> &'static str {
        let c = self.code();
        let names: &[(Status, &str)] = &[
            (Self::SUCCESS, "Successful Completion"),
            (Self::INVALID_OPCODE, "Invalid Command Opcode"),
            (Self::INVALID_FIELD, "Invalid Field in Command"),
            (Self::CID_CONFLICT, "Command ID Conflict"),
            (Self::DATA_TRANSFER_ERROR, "Data Transfer Error"),
            (Self::INTERNAL_ERROR, "Internal Error"),
            (Self::ABORT_REQUESTED, "Command Abort Requested"),
            (
                Self::ABORTED_SQ_DELETION,
                "Command Aborted due to SQ Deletion",
            ),
            (
                Self::ABORTED_FAILED_FUSED,
                "Command Aborted due to Failed Fused Command",
            ),
            (
                Self::ABORTED_MISSING_FUSED,
                "Command Aborted due to Missing Fused Command",
            ),
            (Self::INVALID_NAMESPACE, "Invalid Namespace or Format"),
            (Self::COMMAND_SEQUENCE_ERROR, "Command Sequence Error"),
            (
                Self::INVALID_SGL_SEGMENT_DESCRIPTOR,
                "Invalid SGL Segment Descriptor",
            ),
            (Self::INVALID_SGL_COUNT, "Invalid Number of SGL Descriptors"),
            (Self::DATA_SGL_LENGTH_INVALID, "Data SGL Length Invalid"),
            (Self::SGL_TYPE_INVALID, "SGL Descriptor Type Invalid"),
            (Self::SGL_OFFSET_INVALID, "SGL Offset Invalid"),
            (
                Self::HOST_ID_INCONSISTENT,
                "Host Identifier Inconsistent Format",
            ),
            (Self::KEEP_ALIVE_EXPIRED, "Keep Alive Timer Expired"),
            (Self::KEEP_ALIVE_INVALID, "Keep Alive Timeout Invalid"),
            (Self::LBA_OUT_OF_RANGE, "LBA Out of Range"),
            (Self::CAPACITY_EXCEEDED, "Capacity Exceeded"),
            (Self::NAMESPACE_NOT_READY, "Namespace Not Ready"),
            (Self::COMMAND_INTERRUPTED, "Command Interrupted"),
            (Self::RESERVATION_CONFLICT, "Reservation Conflict"),
            (Self::ABORT_LIMIT_EXCEEDED, "Abort Command Limit Exceeded"),
            (Self::INVALID_INTERRUPT_VECTOR, "Invalid Interrupt Vector"),
            (
                Self::AER_LIMIT_EXCEEDED,
                "Asynchronous Event Request Limit Exceeded",
            ),
            (Self::INVALID_LOG_PAGE, "Invalid Log Page"),
            (
                Self::FEATURE_NOT_SAVEABLE,
                "Feature Identifier Not Saveable",
            ),
            (Self::FEATURE_NOT_CHANGEABLE, "Feature Not Changeable"),
            (
                Self::FEATURE_NOT_NS_SPECIFIC,
                "Feature Not Namespace Specific",
            ),
            (
                Self::CONNECT_INCOMPATIBLE_FORMAT,
                "Connect Incompatible Format / Conflicting Attributes",
            ),
            (Self::CONNECT_CONTROLLER_BUSY, "Connect Controller Busy"),
            (
                Self::CONNECT_INVALID_PARAMETERS,
                "Connect Invalid Parameters",
            ),
            (
                Self::CONNECT_RESTART_DISCOVERY,
                "Connect Restart Discovery / Command Size Limit Exceeded",
            ),
            (Self::CONNECT_INVALID_HOST, "Connect Invalid Host"),
            (Self::WRITE_FAULT, "Write Fault"),
            (Self::UNRECOVERED_READ_ERROR, "Unrecovered Read Error"),
            (Self::COMPARE_FAILURE, "Compare Failure"),
            (Self::ACCESS_DENIED, "Access Denied"),
        ];
        names
            .iter()
            .find(|(s, _)| *s == c)
            .map(|(_, n)| *n)
            .unwrap_or("Unknown Status")
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (sct {:#x} sc {:#04x}{})",
            self.name(),
            self.sct(),
            self.sc(),
            if self.has_dnr() { " dnr" } else { "" }
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
