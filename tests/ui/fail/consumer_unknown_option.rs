use channels::consumer;

#[consumer(websockets)]
struct Chat {
    count: u32,
}

fn main() {}
