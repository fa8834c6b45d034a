use channels::{consumer, routing};

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {}

fn main() {
    let _app = routing! {
        websocket: [
            "ws/chat/<float:ratio>/" => Chat,
            "ws/room/<int:id/" => Chat,
            "ws/(?P<room>\\w+)/" => Chat,
        ],
    };
}
