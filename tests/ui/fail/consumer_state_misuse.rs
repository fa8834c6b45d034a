use channels::consumer;

#[consumer(websocket)]
struct Chat {
    #[state(db)]
    named: String,
    #[state]
    #[init(0)]
    twice: u32,
}

fn main() {}
