use channels::consumer;

#[consumer(protocol = "websocket")]
struct Chat {
    count: u32,
}

#[consumer(protocol = "my chat")]
struct Other {
    count: u32,
}

fn main() {}
