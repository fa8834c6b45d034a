use channels::consumer;

#[consumer(websocket)]
struct Chat(String, u32);

fn main() {}
