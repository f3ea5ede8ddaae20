//! A block device as a namespace: a loop device over a sparse file, exported
//! buffered and with O_DIRECT. Needs root and loop devices; CI has both, so
//! there a missing piece fails the test; elsewhere it skips with the reason.

mod common;

use common::*;
use std::process::Command;

struct Loop {
    dev: String,
    _dir: tempfile::TempDir,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A 32 MiB loop device, or the reason there is none.
fn loop_device() -> Result<Loop, String> {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(base).map_err(|e| format!("temp dir: {e}"))?;
    let img = dir.path().join("loop.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(32 << 20))
        .map_err(|e| format!("{}: {e}", img.display()))?;
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Loop { dev, _dir: dir })
}

#[test]
fn block_device_namespace_buffered_and_direct() {
    let dev = match loop_device() {
        Ok(d) => d,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("block-device test cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIP block_device_namespace_buffered_and_direct: {why}");
            return;
        }
    };
    for direct in [false, true] {
        let toml = format!(
            "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n\
             [[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n\
             [[subsystem.namespace]]\nbackend = \"file\"\npath = \"{}\"\nsize = \"1GiB\"\n\
             block_size = 4096\ndirect = {direct}\n",
            dev.dev
        );
        let t = start(&toml);
        let mut c = connect(t.addr(), 1);
        let ns = c.identify_namespace(1).expect("identify namespace");
        // A block device exports its own size, whatever the config says.
        assert_eq!(ns.nsze, (32 << 20) / 4096, "direct={direct}");
        let q = &mut c.io[0];
        write_read_check(q, 1, 4096, 0, 11 + direct as u64, 4096);
        write_read_check(q, 1, 4096, 100, 12 + direct as u64, 128 * 1024);
        let last = (32 << 20) / 4096 - 2;
        write_read_check(q, 1, 4096, last, 13 + direct as u64, 8192);
        q.flush(1).expect("flush");
        drop(c);
        t.shutdown();
        // The data is on the device itself.
        let on_dev = std::fs::read(&dev.dev).expect("read the loop device");
        assert_same(
            &on_dev[..4096],
            &pattern(11 + direct as u64, 4096),
            "device block 0",
        );
    }
}
