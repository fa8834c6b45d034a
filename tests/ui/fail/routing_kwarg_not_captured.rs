use channels::{consumer, routing};

#[consumer(websocket)]
struct Chat {
    #[url]
    room: String,
}

#[consumer]
impl Chat {}

fn main() {
    let _app = routing! {
        websocket: [
            r"^ws/chat/(?P<name>\w+)/$" => Chat,
        ],
    };
}
