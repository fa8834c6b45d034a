use channels::{auth, consumer};

#[auth(stack)]
struct NotAConsumer {
    count: u32,
}

#[auth(stack, requried)]
#[consumer(websocket)]
struct Typo {}

#[consumer]
impl Typo {}

#[consumer(websocket)]
#[auth(stack, redirect = "/login/")]
struct RedirectWithoutRequired {}

#[consumer]
impl RedirectWithoutRequired {}

#[consumer(websocket)]
#[auth(session)]
struct NoStack {}

#[consumer]
impl NoStack {}

fn main() {}
