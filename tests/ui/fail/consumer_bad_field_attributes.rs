use channels::consumer;

#[consumer(websocket)]
struct Chat {
    #[url = "room"]
    room: String,
    #[url("1st")]
    first: u32,
    #[url]
    #[init(0)]
    page: u32,
    #[url]
    scope: channels::Scope,
}

fn main() {}
