use channels::consumer;

#[consumer(websocket)]
enum Chat {
    Lobby,
    Room(String),
}

fn main() {}
