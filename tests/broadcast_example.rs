//! Runs the broadcast example as a process and attacks it the way a hostile client would.

mod support;

use support::*;

/// Members that never read, sent 1 MiB messages: each holds at most its byte-bounded outgoing
/// queue (plus one message being written) until the write timeout, not 64 messages; and the
/// memory is all given back once they are gone.
#[tokio::test]
async fn never_reading_members_hold_bounded_memory() {
    const MEMBERS: usize = 30;
    const MESSAGES: usize = 16;
    let addr = free_addr().await;
    let example =
        Example::start_with_env("broadcast", &["--addr", &addr.to_string()], &[("MALLOC_MMAP_THRESHOLD_", "131072")])
            .await;
    wait_until_listening(addr).await;
    let pid = example.0.id();
    let baseline = memory(pid, "VmRSS");

    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(RawClient::connect(addr, "/ws/broadcast/flood/").await);
    }
    // The sender reads what it is sent (it is a member too), so it is not a slow client.
    let sender = RawClient::connect(addr, "/ws/broadcast/flood/").await;
    let (mut read, mut write) = sender.tcp.into_split();
    let drain = tokio::spawn(async move { tokio::io::copy(&mut read, &mut tokio::io::sink()).await });
    let big = client_frame(0x1, "x".repeat(1 << 20).as_bytes());
    for _ in 0..MESSAGES {
        within(tokio::io::AsyncWriteExt::write_all(&mut write, &big)).await.unwrap();
    }
    // No member reads, so nothing can be awaited: wait for the peak memory to settle.
    let mut peak = 0;
    within(async {
        let mut last = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = memory(pid, "VmHWM");
            if now == last {
                break;
            }
            last = now;
        }
        peak = last;
    })
    .await;
    let grown = peak.saturating_sub(baseline);
    println!("baseline {baseline} B, peak {peak} B, grown {} MB for {MEMBERS} members", grown >> 20);
    // Unbounded: 64 queued copies of 1 MiB per member (about 2 GB). Bounded: the queue's 1 MiB,
    // the message being written and the handler's copy, per member.
    assert!(grown < (MEMBERS as u64) * (8 << 20), "grew {} MB", grown >> 20);

    drop(members);
    drop(write);
    drain.abort();
    // Everything is freed once they are gone. (glibc keeps freed buffers of 1 MiB for reuse
    // unless its mmap threshold is fixed, as it is here; see the README's "Memory" notes.)
    within(async {
        while memory(pid, "VmRSS") > baseline + (16 << 20) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}
