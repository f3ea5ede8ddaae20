//! EventFd, CPU clocks, thread names, and file helpers.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nvmf_sys::{cpu, file, EventFd};

#[test]
fn eventfd_counts_and_drains() {
    let efd = EventFd::new().unwrap();
    let mut f = std::fs::File::from(efd.as_fd().try_clone_to_owned().unwrap());
    use std::io::Read;
    let mut buf = [0u8; 8];
    // Empty and non-blocking: WouldBlock.
    assert_eq!(
        f.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    efd.notify();
    efd.notify();
    efd.notify();
    assert_eq!(f.read(&mut buf).unwrap(), 8);
    assert_eq!(u64::from_ne_bytes(buf), 3);
    efd.notify();
    efd.drain();
    efd.drain(); // draining an empty counter is harmless
    assert!(f.read(&mut buf).is_err());
    assert_eq!(efd.as_raw_fd(), efd.fd());
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EventFd>();
    assert_send_sync::<nvmf_sys::Region>();
}

#[test]
fn cpu_clocks_advance_with_work() {
    let t0 = cpu::thread_cpu_time();
    let p0 = cpu::process_cpu_time();
    // Spin until the thread clock shows 5 ms of work; a loaded machine may
    // take much longer in wall time, so the only limit is a generous cap.
    let start = Instant::now();
    let mut x = 0u64;
    while cpu::thread_cpu_time() - t0 < Duration::from_millis(5)
        && start.elapsed() < Duration::from_secs(60)
    {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    let t1 = cpu::thread_cpu_time();
    let p1 = cpu::process_cpu_time();
    assert!(t1 - t0 >= Duration::from_millis(5), "{:?}", t1 - t0);
    // The process clock includes this thread's work.
    assert!(
        p1 - p0 + Duration::from_millis(1) >= t1 - t0,
        "{:?} vs {:?}",
        p1 - p0,
        t1 - t0
    );
    // Sleeping costs no CPU time.
    let s0 = cpu::thread_cpu_time();
    std::thread::sleep(Duration::from_millis(50));
    assert!(cpu::thread_cpu_time() - s0 < Duration::from_millis(25));
}

#[test]
fn thread_name_is_set_and_truncated() {
    std::thread::spawn(|| {
        cpu::set_thread_name("nvmf-reactor-0-long-name");
        let tid = std::fs::read_link("/proc/thread-self").unwrap();
        let comm =
            std::fs::read_to_string(std::path::Path::new("/proc").join(tid).join("comm")).unwrap();
        assert_eq!(comm.trim_end(), "nvmf-reactor-0-");
    })
    .join()
    .unwrap();
}

#[test]
fn file_helpers() {
    let path = std::env::temp_dir().join(format!("nvmf-sys-file-{}", std::process::id()));
    assert!(file::open_file(&path, false, false).is_err()); // no create: missing
    let f = file::open_file(&path, true, false).unwrap();
    assert_eq!(file::block_device_size(&f).unwrap(), None);
    drop(f);
    // O_DIRECT where the filesystem supports it (tmpfs may refuse it with EINVAL).
    match file::open_file(&path, false, true) {
        Ok(f) => {
            let flags =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
            let line = flags.lines().find(|l| l.starts_with("flags:")).unwrap();
            let v = u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap();
            assert!(v & libc::O_DIRECT as u32 != 0);
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)),
    }
    std::fs::remove_file(&path).unwrap();
    assert_ne!(file::FALLOC_FL_PUNCH_HOLE, file::FALLOC_FL_ZERO_RANGE);

    // A real block device, if this machine has one we can open read-only.
    for dev in ["vda", "sda", "nvme0n1", "zram0"] {
        let Ok(f) = std::fs::File::open(format!("/dev/{dev}")) else {
            continue;
        };
        let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{dev}/size"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(file::block_device_size(&f).unwrap(), Some(sectors * 512));
        return;
    }
}
