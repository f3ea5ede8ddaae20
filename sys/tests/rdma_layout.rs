//! The verbs and RDMA CM structures in `nvmf_sys::rdma::ffi` match rdma-core's headers: a C
//! program built against the installed headers prints each offset and size, and they are
//! compared with the Rust layout. Needs rdma-core's -dev packages (scripts/setup.sh installs
//! them); without them the test fails under CI=true and is skipped otherwise.

use nvmf_sys::rdma::ffi::*;
use std::mem::{offset_of, size_of};
use std::process::Command;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
#define S(t) printf(#t " %zu\n", sizeof(struct t))
int main(void) {
  O(ibv_context, ops); O(ibv_context, cmd_fd); O(ibv_context, num_comp_vectors);
  O(ibv_context_ops, poll_cq); O(ibv_context_ops, req_notify_cq);
  O(ibv_context_ops, post_send); O(ibv_context_ops, post_recv); S(ibv_context_ops);
  O(ibv_pd, handle); O(ibv_mr, addr); O(ibv_mr, length); O(ibv_mr, lkey); O(ibv_mr, rkey);
  O(ibv_comp_channel, fd); O(ibv_cq, context); O(ibv_qp, context); O(ibv_qp, qp_num);
  O(ibv_sge, length); O(ibv_sge, lkey); S(ibv_sge);
  O(ibv_send_wr, next); O(ibv_send_wr, sg_list); O(ibv_send_wr, num_sge);
  O(ibv_send_wr, opcode); O(ibv_send_wr, send_flags); O(ibv_send_wr, invalidate_rkey);
  O(ibv_send_wr, wr.rdma.remote_addr); O(ibv_send_wr, wr.rdma.rkey);
  O(ibv_send_wr, qp_type.xrc.remote_srqn); S(ibv_send_wr);
  O(ibv_recv_wr, next); O(ibv_recv_wr, sg_list); O(ibv_recv_wr, num_sge); S(ibv_recv_wr);
  O(ibv_wc, status); O(ibv_wc, opcode); O(ibv_wc, byte_len); O(ibv_wc, invalidated_rkey);
  O(ibv_wc, qp_num); O(ibv_wc, wc_flags); O(ibv_wc, dlid_path_bits); S(ibv_wc);
  O(ibv_qp_cap, max_inline_data); S(ibv_qp_cap);
  O(ibv_qp_init_attr, send_cq); O(ibv_qp_init_attr, cap); O(ibv_qp_init_attr, qp_type);
  O(ibv_qp_init_attr, sq_sig_all); S(ibv_qp_init_attr);
  O(ibv_device_attr, max_mr_size); O(ibv_device_attr, max_qp_wr); O(ibv_device_attr, max_sge);
  O(ibv_device_attr, max_cqe); O(ibv_device_attr, max_qp_rd_atom);
  O(ibv_device_attr, max_qp_init_rd_atom); S(ibv_device_attr);
  O(rdma_event_channel, fd);
  O(rdma_cm_id, verbs); O(rdma_cm_id, channel); O(rdma_cm_id, context); O(rdma_cm_id, qp);
  O(rdma_cm_id, route.addr.src_addr); O(rdma_cm_id, route.addr.dst_addr);
  O(rdma_cm_event, listen_id); O(rdma_cm_event, event); O(rdma_cm_event, status);
  O(rdma_cm_event, param.conn);
  O(rdma_conn_param, private_data_len); O(rdma_conn_param, responder_resources);
  O(rdma_conn_param, initiator_depth); O(rdma_conn_param, flow_control);
  O(rdma_conn_param, rnr_retry_count); O(rdma_conn_param, qp_num); S(rdma_conn_param);
  printf("IBV_WR_RDMA_WRITE %d\nIBV_WR_SEND %d\nIBV_WR_RDMA_READ %d\nIBV_WR_SEND_WITH_INV %d\n",
         IBV_WR_RDMA_WRITE, IBV_WR_SEND, IBV_WR_RDMA_READ, IBV_WR_SEND_WITH_INV);
  printf("IBV_SEND_SIGNALED %d\nIBV_SEND_INLINE %d\nIBV_ACCESS_LOCAL_WRITE %d\nIBV_QPT_RC %d\n",
         IBV_SEND_SIGNALED, IBV_SEND_INLINE, IBV_ACCESS_LOCAL_WRITE, IBV_QPT_RC);
  printf("RDMA_PS_TCP %d\n", RDMA_PS_TCP);
  return 0;
}
"#;

fn c_layout() -> Option<std::collections::HashMap<String, usize>> {
    let headers = [
        "/usr/include/infiniband/verbs.h",
        "/usr/include/rdma/rdma_cma.h",
    ];
    if headers.iter().any(|h| !std::path::Path::new(h).exists()) {
        let why = "rdma-core headers missing (apt-get install libibverbs-dev librdmacm-dev)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIP: {why}");
        return None;
    }
    let dir = tempfile_dir();
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, PROGRAM).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(st.success(), "the layout program did not compile");
    let out = Command::new(&bin).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some(
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect(),
    )
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rdma-layout-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn ffi_layouts_match_rdma_core() {
    let Some(c) = c_layout() else { return };
    let want = |k: &str| *c.get(k).unwrap_or_else(|| panic!("{k} not printed"));
    let ops = offset_of!(ibv_context, ops);
    let ours: &[(&str, usize)] = &[
        ("ibv_context.ops", ops),
        ("ibv_context.cmd_fd", offset_of!(ibv_context, cmd_fd)),
        (
            "ibv_context.num_comp_vectors",
            offset_of!(ibv_context, num_comp_vectors),
        ),
        (
            "ibv_context_ops.poll_cq",
            offset_of!(ibv_context_ops, poll_cq),
        ),
        (
            "ibv_context_ops.req_notify_cq",
            offset_of!(ibv_context_ops, req_notify_cq),
        ),
        (
            "ibv_context_ops.post_send",
            offset_of!(ibv_context_ops, post_send),
        ),
        (
            "ibv_context_ops.post_recv",
            offset_of!(ibv_context_ops, post_recv),
        ),
        ("ibv_context_ops", size_of::<ibv_context_ops>()),
        ("ibv_pd.handle", offset_of!(ibv_pd, handle)),
        ("ibv_mr.addr", offset_of!(ibv_mr, addr)),
        ("ibv_mr.length", offset_of!(ibv_mr, length)),
        ("ibv_mr.lkey", offset_of!(ibv_mr, lkey)),
        ("ibv_mr.rkey", offset_of!(ibv_mr, rkey)),
        ("ibv_comp_channel.fd", offset_of!(ibv_comp_channel, fd)),
        ("ibv_cq.context", offset_of!(ibv_cq, context)),
        ("ibv_qp.context", offset_of!(ibv_qp, context)),
        ("ibv_qp.qp_num", offset_of!(ibv_qp, qp_num)),
        ("ibv_sge.length", offset_of!(ibv_sge, length)),
        ("ibv_sge.lkey", offset_of!(ibv_sge, lkey)),
        ("ibv_sge", size_of::<ibv_sge>()),
        ("ibv_send_wr.next", offset_of!(ibv_send_wr, next)),
        ("ibv_send_wr.sg_list", offset_of!(ibv_send_wr, sg_list)),
        ("ibv_send_wr.num_sge", offset_of!(ibv_send_wr, num_sge)),
        ("ibv_send_wr.opcode", offset_of!(ibv_send_wr, opcode)),
        (
            "ibv_send_wr.send_flags",
            offset_of!(ibv_send_wr, send_flags),
        ),
        (
            "ibv_send_wr.invalidate_rkey",
            offset_of!(ibv_send_wr, imm_or_inv),
        ),
        (
            "ibv_send_wr.wr.rdma.remote_addr",
            offset_of!(ibv_send_wr, remote_addr),
        ),
        ("ibv_send_wr.wr.rdma.rkey", offset_of!(ibv_send_wr, rkey)),
        (
            "ibv_send_wr.qp_type.xrc.remote_srqn",
            offset_of!(ibv_send_wr, xrc_remote_srqn),
        ),
        ("ibv_send_wr", size_of::<ibv_send_wr>()),
        ("ibv_recv_wr.next", offset_of!(ibv_recv_wr, next)),
        ("ibv_recv_wr.sg_list", offset_of!(ibv_recv_wr, sg_list)),
        ("ibv_recv_wr.num_sge", offset_of!(ibv_recv_wr, num_sge)),
        ("ibv_recv_wr", size_of::<ibv_recv_wr>()),
        ("ibv_wc.status", offset_of!(ibv_wc, status)),
        ("ibv_wc.opcode", offset_of!(ibv_wc, opcode)),
        ("ibv_wc.byte_len", offset_of!(ibv_wc, byte_len)),
        ("ibv_wc.invalidated_rkey", offset_of!(ibv_wc, imm_or_inv)),
        ("ibv_wc.qp_num", offset_of!(ibv_wc, qp_num)),
        ("ibv_wc.wc_flags", offset_of!(ibv_wc, wc_flags)),
        ("ibv_wc.dlid_path_bits", offset_of!(ibv_wc, dlid_path_bits)),
        ("ibv_wc", size_of::<ibv_wc>()),
        (
            "ibv_qp_cap.max_inline_data",
            offset_of!(ibv_qp_cap, max_inline_data),
        ),
        ("ibv_qp_cap", size_of::<ibv_qp_cap>()),
        (
            "ibv_qp_init_attr.send_cq",
            offset_of!(ibv_qp_init_attr, send_cq),
        ),
        ("ibv_qp_init_attr.cap", offset_of!(ibv_qp_init_attr, cap)),
        (
            "ibv_qp_init_attr.qp_type",
            offset_of!(ibv_qp_init_attr, qp_type),
        ),
        (
            "ibv_qp_init_attr.sq_sig_all",
            offset_of!(ibv_qp_init_attr, sq_sig_all),
        ),
        ("ibv_qp_init_attr", size_of::<ibv_qp_init_attr>()),
        ("ibv_device_attr.max_mr_size", DEVICE_ATTR_MAX_MR_SIZE),
        ("ibv_device_attr.max_qp_wr", DEVICE_ATTR_MAX_QP_WR),
        ("ibv_device_attr.max_sge", DEVICE_ATTR_MAX_SGE),
        ("ibv_device_attr.max_cqe", DEVICE_ATTR_MAX_CQE),
        ("ibv_device_attr.max_qp_rd_atom", DEVICE_ATTR_MAX_QP_RD_ATOM),
        (
            "ibv_device_attr.max_qp_init_rd_atom",
            DEVICE_ATTR_MAX_QP_INIT_RD_ATOM,
        ),
        ("rdma_event_channel.fd", offset_of!(rdma_event_channel, fd)),
        ("rdma_cm_id.verbs", offset_of!(rdma_cm_id, verbs)),
        ("rdma_cm_id.channel", offset_of!(rdma_cm_id, channel)),
        ("rdma_cm_id.context", offset_of!(rdma_cm_id, context)),
        ("rdma_cm_id.qp", offset_of!(rdma_cm_id, qp)),
        (
            "rdma_cm_id.route.addr.src_addr",
            offset_of!(rdma_cm_id, src_addr),
        ),
        (
            "rdma_cm_id.route.addr.dst_addr",
            offset_of!(rdma_cm_id, dst_addr),
        ),
        (
            "rdma_cm_event.listen_id",
            offset_of!(rdma_cm_event, listen_id),
        ),
        ("rdma_cm_event.event", offset_of!(rdma_cm_event, event)),
        ("rdma_cm_event.status", offset_of!(rdma_cm_event, status)),
        ("rdma_cm_event.param.conn", offset_of!(rdma_cm_event, conn)),
        (
            "rdma_conn_param.private_data_len",
            offset_of!(rdma_conn_param, private_data_len),
        ),
        (
            "rdma_conn_param.responder_resources",
            offset_of!(rdma_conn_param, responder_resources),
        ),
        (
            "rdma_conn_param.initiator_depth",
            offset_of!(rdma_conn_param, initiator_depth),
        ),
        (
            "rdma_conn_param.flow_control",
            offset_of!(rdma_conn_param, flow_control),
        ),
        (
            "rdma_conn_param.rnr_retry_count",
            offset_of!(rdma_conn_param, rnr_retry_count),
        ),
        (
            "rdma_conn_param.qp_num",
            offset_of!(rdma_conn_param, qp_num),
        ),
        ("rdma_conn_param", size_of::<rdma_conn_param>()),
        ("IBV_WR_RDMA_WRITE", IBV_WR_RDMA_WRITE as usize),
        ("IBV_WR_SEND", IBV_WR_SEND as usize),
        ("IBV_WR_RDMA_READ", IBV_WR_RDMA_READ as usize),
        ("IBV_WR_SEND_WITH_INV", IBV_WR_SEND_WITH_INV as usize),
        ("IBV_SEND_SIGNALED", IBV_SEND_SIGNALED as usize),
        ("IBV_SEND_INLINE", IBV_SEND_INLINE as usize),
        ("IBV_ACCESS_LOCAL_WRITE", IBV_ACCESS_LOCAL_WRITE as usize),
        ("IBV_QPT_RC", IBV_QPT_RC as usize),
        ("RDMA_PS_TCP", RDMA_PS_TCP as usize),
    ];
    let mut wrong = Vec::new();
    for (k, v) in ours {
        if want(k) != *v {
            wrong.push(format!("{k}: C {} Rust {v}", want(k)));
        }
    }
    assert!(want("ibv_device_attr") <= DEVICE_ATTR_LEN);
    assert!(wrong.is_empty(), "layouts differ:\n{}", wrong.join("\n"));
}

#[test]
fn the_libraries_load_or_say_why_not() {
    // On a machine with rdma-core's libraries they load; without, the reason names them.
    match nvmf_sys::rdma::available() {
        Ok(()) => {}
        Err(e) => assert!(e.contains("libibverbs") || e.contains("librdmacm"), "{e}"),
    }
}
