use channels::consumer;

#[consumer(websocket, json)]
struct Chat {
    count: u32,
}

fn main() {}
