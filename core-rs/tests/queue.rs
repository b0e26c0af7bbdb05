//! Event queues in the core (`shmcall_core::queue`): a host, producers and consumers in one
//! process, through real sockets and segments. Every wait is bounded.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{TempDir, WAIT};
use shmcall_core::owner::Inline;
use shmcall_core::queue::{
    Consumer, EventQueue, Events, MAX_DATA, MAX_POSTS_INPUT, Notification, OP_POSTS,
    POSTS_SINCE_MINOR, Producer,
};
use shmcall_core::{Client, Mode, Status, handlers};

/// Waits (bounded) until `ready` holds.
fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}"
        );
        thread::yield_now();
    }
}

fn events(list: &[Notification]) -> Vec<(u32, u64, Vec<u8>)> {
    list.iter()
        .map(|n| (n.event, n.sequence, n.data.clone()))
        .collect()
}

#[test]
fn consumers_get_the_events_they_registered_for_in_post_order_with_the_queue_s_sequence() {
    let dir = TempDir::new("queue-basic");
    let queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    let odd = Consumer::open("q", &Events::List(vec![1, 3]), 16, &options).unwrap();
    let all = Consumer::open("q", &Events::All, 16, &options).unwrap();
    let producer = Producer::open("q", &options).unwrap();
    for (event, data) in [(1, &b"one"[..]), (2, b"two"), (3, b""), (4, &[7; MAX_DATA])] {
        producer.post(event, data).unwrap();
    }
    assert_eq!(
        events(&odd.retrieve(100).unwrap()),
        vec![(1, 1, b"one".to_vec()), (3, 3, vec![])],
        "only its events, numbered by the queue (the gap is the event it did not register for)"
    );
    let got = all.retrieve(100).unwrap();
    assert_eq!(
        got.iter().map(|n| n.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(got[3].data, vec![7; MAX_DATA]);
    assert!(
        all.retrieve(100).unwrap().is_empty(),
        "each notification is retrieved once"
    );
    let stats = queue.stats();
    assert_eq!((stats.posted, stats.delivered, stats.dropped), (4, 6, 0));
    assert_eq!(stats.consumers, 2);
    let too_big = producer.post(5, &[0; MAX_DATA + 1]).unwrap_err();
    assert_eq!(too_big.status(), Status::InvalidArgument);
}

#[test]
fn a_full_list_drops_and_counts_that_consumer_s_notifications_only() {
    let dir = TempDir::new("queue-drop");
    let queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    let slow = Consumer::open("q", &Events::All, 4, &options).unwrap();
    let fast = Consumer::open("q", &Events::All, 64, &options).unwrap();
    let producer = Producer::open("q", &options).unwrap();
    for i in 0..10u32 {
        producer.post(9, &i.to_le_bytes()).unwrap();
    }
    let slow_got = slow.retrieve(100).unwrap();
    assert_eq!(
        slow_got.iter().map(|n| n.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(slow.dropped(), 6);
    assert_eq!(
        fast.retrieve(100).unwrap().len(),
        10,
        "the fast one lost nothing"
    );
    assert_eq!(fast.dropped(), 0);
    assert_eq!(queue.stats().dropped, 6);
    // Retrieved, the list has room again; the gap shows in the sequence.
    producer.post(9, b"after").unwrap();
    let next = slow.retrieve(100).unwrap();
    assert_eq!(events(&next), vec![(9, 11, b"after".to_vec())]);
}

#[test]
fn registration_changes_apply_to_posts_accepted_after_them() {
    let dir = TempDir::new("queue-register");
    let _queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    let consumer = Consumer::open("q", &Events::List(vec![]), 16, &options).unwrap();
    let producer = Producer::open("q", &options).unwrap();
    producer.post(1, b"before").unwrap();
    consumer.register(&Events::List(vec![1, 2])).unwrap();
    producer.post(1, b"a").unwrap();
    producer.post(2, b"b").unwrap();
    consumer.unregister(&Events::List(vec![1])).unwrap();
    producer.post(1, b"c").unwrap();
    producer.post(2, b"d").unwrap();
    consumer.unregister(&Events::All).unwrap();
    producer.post(2, b"e").unwrap();
    consumer.register(&Events::All).unwrap();
    producer.post(7, b"f").unwrap();
    let got: Vec<_> = consumer
        .retrieve(100)
        .unwrap()
        .into_iter()
        .map(|n| (n.event, n.data))
        .collect();
    assert_eq!(
        got,
        [
            (1, b"a".to_vec()),
            (2, b"b".to_vec()),
            (2, b"d".to_vec()),
            (7, b"f".to_vec())
        ]
    );
}

#[test]
fn next_waits_for_a_post_and_wakes_when_it_comes() {
    let dir = TempDir::new("queue-next");
    let (_queue, consumer, _producer) = hundred_posts_waited_for(&dir, dir.serve_options());
    let timed_out = consumer.next(Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(timed_out.status(), Status::TimedOut);
}

/// A host served with `options`, a consumer that waits in `next()` for 100 posts while a
/// producer makes them, falling asleep now and then; it got each, in order.
fn hundred_posts_waited_for(
    dir: &TempDir,
    options: shmcall_core::ServeOptions,
) -> (EventQueue, Arc<Consumer>, Producer) {
    let queue = EventQueue::serve("q", options).unwrap();
    let options = dir.connect_options();
    // Room for every post: a consumer descheduled for a while must not drop any (that is
    // another test's), however the threads are scheduled.
    let consumer = Arc::new(Consumer::open("q", &Events::All, 128, &options).unwrap());
    let producer = Producer::open("q", &options).unwrap();
    let waiting = {
        let consumer = consumer.clone();
        thread::spawn(move || {
            (0..100)
                .map(|_| consumer.next(Some(WAIT)).unwrap().sequence)
                .collect::<Vec<_>>()
        })
    };
    for i in 0..100u32 {
        producer.post(1, &i.to_le_bytes()).unwrap();
        if i % 10 == 0 {
            // Now and then the consumer has time to fall asleep.
            thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(waiting.join().unwrap(), (1..=100).collect::<Vec<u64>>());
    (queue, consumer, producer)
}

#[test]
fn a_closed_consumer_is_forgotten_and_a_closed_host_ends_next_after_what_was_listed() {
    let dir = TempDir::new("queue-end");
    let mut queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    let leaving = Consumer::open("q", &Events::All, 16, &options).unwrap();
    let staying = Consumer::open("q", &Events::All, 16, &options).unwrap();
    let producer = Producer::open("q", &options).unwrap();
    leaving.close();
    eventually("the host forgets the closed consumer", || {
        queue.stats().consumers == 1
    });
    producer.post(1, b"x").unwrap();
    producer.post(2, b"y").unwrap();
    assert_eq!(queue.stats().delivered, 2, "nothing goes to the closed one");
    queue.close();
    assert_eq!(staying.next(Some(WAIT)).unwrap().data, b"x");
    assert_eq!(staying.next(Some(WAIT)).unwrap().data, b"y");
    let end = staying.next(Some(WAIT)).unwrap_err();
    assert_eq!(end.status(), Status::PeerTerminated, "{end}");
    let post = producer.post(3, b"z").unwrap_err();
    assert_eq!(post.status(), Status::PeerTerminated, "{post}");
}

#[test]
fn a_batch_of_posts_is_accepted_in_order_and_a_bad_batch_posts_nothing() {
    let dir = TempDir::new("queue-batch");
    let queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    let all = Consumer::open("q", &Events::All, 16, &options).unwrap();
    let producer = Producer::open("q", &options).unwrap();
    producer.post(9, b"before").unwrap();
    let full = [5; MAX_DATA];
    producer
        .post_all(&[(1, b"a"), (2, b""), (3, &full)])
        .unwrap();
    producer.post(9, b"after").unwrap();
    assert_eq!(
        events(&all.retrieve(100).unwrap()),
        vec![
            (9, 1, b"before".to_vec()),
            (1, 2, b"a".to_vec()),
            (2, 3, vec![]),
            (3, 4, full.to_vec()),
            (9, 5, b"after".to_vec()),
        ],
        "each record a post of its own, numbered in the batch's order between its neighbours"
    );
    assert_eq!(
        producer
            .post_all(&[(1, b"ok"), (2, &[0; MAX_DATA + 1])])
            .unwrap_err()
            .status(),
        Status::InvalidArgument
    );

    // What a client that breaks the format sends: each refused whole, nothing posted.
    let client = Client::connect("q", &options).unwrap();
    let record = |event: u32, len: u32, data: &[u8]| {
        let mut r = event.to_le_bytes().to_vec();
        r.extend_from_slice(&len.to_le_bytes());
        r.extend_from_slice(data);
        r
    };
    let good = record(1, 2, b"ok");
    let bad: [(&str, Vec<u8>); 4] = [
        ("no record", vec![]),
        ("a header cut short", [&good[..], &[1, 0, 0]].concat()),
        (
            "more data than MAX_DATA",
            [good.clone(), record(1, 241, &[0; 241])].concat(),
        ),
        (
            "a length beyond the input",
            [good.clone(), record(1, 3, b"ab")].concat(),
        ),
    ];
    for (what, input) in bad {
        let mut ticket = client.begin(OP_POSTS, input.len(), 0, Mode::Queue).unwrap();
        ticket.input().write(&input);
        let refused = client.call(&mut ticket).unwrap_err();
        assert_eq!(refused.status(), Status::InvalidArgument, "{what}");
    }
    assert_eq!(
        queue.stats().posted,
        5,
        "no post of a bad batch was accepted"
    );
    assert!(all.retrieve(100).unwrap().is_empty());

    // One command holds at most MAX_POSTS_INPUT bytes of records; post_all splits a longer run.
    let too_long: Vec<u8> = (0..MAX_POSTS_INPUT / 8 + 1)
        .flat_map(|_| record(1, 0, b""))
        .collect();
    let mut ticket = client
        .begin(OP_POSTS, too_long.len(), 0, Mode::Queue)
        .unwrap();
    ticket.input().write(&too_long);
    let refused = client.call(&mut ticket).unwrap_err();
    assert_eq!(
        refused.status(),
        Status::InvalidArgument,
        "a batch over the limit"
    );
    assert_eq!(queue.stats().posted, 5);
    let data = [3u8; 100];
    let many: Vec<(u32, &[u8])> = (0..1000).map(|i| (i, &data[..])).collect();
    producer.post_all(&many).unwrap();
    let got = all.retrieve(2000).unwrap();
    assert_eq!(
        got.len(),
        16,
        "the consumer's list holds 16; the rest dropped"
    );
    assert_eq!(
        queue.stats().posted,
        1005,
        "every post of the split run accepted"
    );
    assert_eq!(
        got.iter()
            .map(|n| (n.event, n.sequence))
            .collect::<Vec<_>>(),
        (0..16).map(|i| (i, 6 + u64::from(i))).collect::<Vec<_>>()
    );
}

#[test]
fn a_producer_that_speaks_2_4_posts_one_at_a_time_and_the_host_takes_no_batch_from_it() {
    let dir = TempDir::new("queue-2-4");
    let _queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    let all = Consumer::open("q", &Events::All, 16, &options).unwrap();
    let old = shmcall_core::ConnectOptions {
        protocol_minor: POSTS_SINCE_MINOR - 1,
        ..options.clone()
    };
    let producer = Producer::open("q", &old).unwrap();
    producer.post_all(&[(1, b"a"), (2, b"b")]).unwrap();
    assert_eq!(
        events(&all.retrieve(100).unwrap()),
        vec![(1, 1, b"a".to_vec()), (2, 2, b"b".to_vec())]
    );
    // The batch itself, on a 2.4 connection, is what a 2.4 host refuses.
    let client = Client::connect("q", &old).unwrap();
    assert_eq!(client.protocol_minor(), POSTS_SINCE_MINOR - 1);
    let input = [1, 0, 0, 0, 0, 0, 0, 0];
    let mut ticket = client.begin(OP_POSTS, input.len(), 0, Mode::Queue).unwrap();
    ticket.input().write(&input);
    let refused = client.call(&mut ticket).unwrap_err();
    assert_eq!(refused.status(), Status::InvalidCommand);
}

#[test]
fn queue_operations_and_commands_do_not_cross() {
    let dir = TempDir::new("queue-cross");
    let _server = shmcall_core::Server::serve(
        "plain",
        handlers(|_| Ok(()), |c, _, _| c.finish(0, 0), |_, _| {}),
        dir.serve_options(),
    )
    .unwrap();
    let _queue = EventQueue::serve("q", dir.serve_options()).unwrap();
    let options = dir.connect_options();
    // A producer of a server that is no queue: its post is refused, no handler runs it.
    let wrong = Producer::open("plain", &options).unwrap();
    assert_eq!(
        wrong.post(1, b"").unwrap_err().status(),
        Status::InvalidCommand
    );
    // A command to a queue is refused too.
    let client = Client::connect("q", &options).unwrap();
    let mut ticket = client.begin(1, 0, 0, Mode::Default).unwrap();
    let refused = client.call(&mut ticket).unwrap_err();
    assert_eq!(refused.status(), Status::InvalidCommand);
}

/// Four producers and eight consumers whose registrations change as they go, for
/// `SHMCALL_SOAK_SECONDS` (4 by default): every notification the host wrote is retrieved or
/// counted as dropped, each consumer sees the queue's numbers rise, and one producer's posts
/// in its order.
#[test]
fn a_soak_of_producers_and_consumers_with_changing_registrations_accounts_for_every_notification() {
    soak(common::trials("SHMCALL_SOAK_SECONDS", 4) as u64, false);
}

/// The soak with a host run by the process's I/O thread ([`Inline`]), as Deno and Node host a
/// queue: half as long.
#[test]
fn the_same_soak_with_a_host_run_by_the_io_thread() {
    soak(
        common::trials("SHMCALL_SOAK_SECONDS", 4).div_ceil(2) as u64,
        true,
    );
}

#[test]
fn next_waits_for_a_post_from_a_host_run_by_the_io_thread() {
    let dir = TempDir::new("queue-inline-next");
    let (queue, consumer, producer) = hundred_posts_waited_for(&dir, inline_options(&dir));
    // A consumer that leaves is forgotten, by the I/O thread too; the host closes from this
    // thread, which the I/O thread's runs of the host answer.
    drop(consumer);
    eventually("the host forgets the consumer", || {
        queue.stats().consumers == 0
    });
    producer.post(2, b"").unwrap();
    assert_eq!(queue.stats().posted, 101);
    drop(queue);
    assert_eq!(
        producer.post(3, b"").unwrap_err().status(),
        Status::PeerTerminated
    );
}

/// Serve options whose owner is the I/O thread and whose spin is 0, as the bindings serve a queue.
fn inline_options(dir: &TempDir) -> shmcall_core::ServeOptions {
    shmcall_core::ServeOptions {
        spin: Duration::ZERO,
        owner: Some(Inline::new().unwrap()),
        ..dir.serve_options()
    }
}

/// Four producers and eight consumers, for `seconds`, the host run by the runner thread or, when
/// `inline`, by the I/O thread.
fn soak(seconds: u64, inline: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = TempDir::new("queue-soak");
    let options = if inline {
        inline_options(&dir)
    } else {
        dir.serve_options()
    };
    let queue = EventQueue::serve("q", options).unwrap();
    let options = dir.connect_options();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = Arc::new(AtomicBool::new(true));
    let consumers: Vec<_> = (0..8u32)
        .map(|c| {
            let consumer = Consumer::open("q", &Events::List(vec![c % 4]), 64, &options).unwrap();
            let producing = producing.clone();
            thread::spawn(move || {
                let mut last_sequence = 0u64;
                let mut last_from = [None::<u32>; 4];
                let mut retrieved = 0u64;
                let mut round = 0u32;
                loop {
                    let done = !producing.load(Ordering::SeqCst);
                    for n in consumer.retrieve(usize::MAX).unwrap() {
                        assert!(n.sequence > last_sequence, "the queue's order");
                        last_sequence = n.sequence;
                        let producer = n.data[0] as usize;
                        let count = u32::from_le_bytes(n.data[1..5].try_into().unwrap());
                        if let Some(before) = last_from[producer] {
                            assert!(count > before, "producer {producer}'s order");
                        }
                        last_from[producer] = Some(count);
                        retrieved += 1;
                    }
                    if done {
                        // Everything the host wrote before the producers stopped is listed.
                        let rest = consumer.retrieve(usize::MAX).unwrap().len() as u64;
                        return (retrieved + rest, u64::from(consumer.dropped()));
                    }
                    round += 1;
                    // Registrations change as posts flow.
                    match round % 50 {
                        0 => consumer
                            .register(&Events::List(vec![(c + round) % 4]))
                            .unwrap(),
                        17 => consumer.unregister(&Events::List(vec![c % 4])).unwrap(),
                        29 => consumer.register(&Events::All).unwrap(),
                        41 => consumer.unregister(&Events::All).unwrap(),
                        _ => thread::yield_now(),
                    }
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..4u8)
        .map(|p| {
            let producer = Producer::open("q", &options).unwrap();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut count = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let mut data = vec![p];
                    data.extend_from_slice(&count.to_le_bytes());
                    producer.post(count % 4, &data).unwrap();
                    count += 1;
                }
                count
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    let posted: u64 = producers
        .into_iter()
        .map(|p| u64::from(p.join().unwrap()))
        .sum();
    producing.store(false, Ordering::SeqCst);
    let (retrieved, dropped) = consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(r, d), (cr, cd)| (r + cr, d + cd));
    let stats = queue.stats();
    assert_eq!(stats.posted, posted, "every post accepted once");
    assert_eq!(
        stats.delivered, retrieved,
        "every delivered notification retrieved"
    );
    assert_eq!(
        stats.dropped, dropped,
        "every dropped one counted by its consumer"
    );
    assert!(
        posted > 1000 && retrieved > 0,
        "a soak that did something: {stats:?}"
    );
    println!("soak: {seconds} s, {posted} posts, {retrieved} retrieved, {dropped} dropped");
}
