use channels::{consumer, routing};

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {}

fn main() {
    let _app = routing! {
        websocket: [
            r"^ws/chat/(?P<room>\w+/$" => Chat,
        ],
    };
}
