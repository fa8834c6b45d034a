use channels::consumer;
use channels::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
pub struct Chat {
    /// The connection's scope (added by `#[consumer]`).
    pub scope: ::channels::Scope,
    room: String,
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::FromScope for Chat {
        fn from_scope(
            scope: ::channels::__private::Scope,
        ) -> ::core::result::Result<Self, ::channels::__private::ConsumerError> {
            ::core::result::Result::Ok(Self {
                room: ::channels::__private::url_param(&scope, "room")?,
                scope,
            })
        }
    }
    #[automatically_derived]
    impl ::channels::__private::Consumer for Chat {
        const PROTOCOL: &'static str = "websocket";
        const URL_PARAMS: &'static [&'static str] = &["room"];
        type App = ::channels::__private::ConsumerApp<Self>;
        fn app() -> Self::App {
            ::channels::__private::ConsumerApp::json(
                <Self as ::channels::__private::FromScope>::from_scope,
            )
        }
    }
};
impl Chat {
    async fn receive_json(
        &mut self,
        ws: &mut Websocket,
        content: Value,
    ) -> Result<(), ConsumerError> {
        ws.send_json(&content).await
    }
    async fn joined(
        &mut self,
        ws: &mut Websocket,
        event: HashMap<String, String>,
    ) -> Result<(), ConsumerError> {
        ws.send_json(&event).await
    }
    async fn left(
        &mut self,
        ws: &mut Websocket,
        _event: Value,
    ) -> Result<(), ConsumerError> {
        ws.send_text(self.room.clone()).await?;
        Ok(())
    }
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::JsonWebsocketConsumer for Chat {
        const RECEIVES_CHANNEL_MESSAGES: bool = true;
        type Incoming = Value;
        async fn receive_json(
            &mut self,
            ws: &mut ::channels::__private::Websocket,
            content: Self::Incoming,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            ::channels::__private::IntoConsumerResult::into_consumer_result(
                <Chat>::receive_json(self, ws, content).await,
            )
        }
        async fn handle_message(
            &mut self,
            handle: &mut ::channels::__private::Websocket,
            message: ::channels::__private::ChannelMessage,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            match message.message_type() {
                ::core::option::Option::Some("chat.joined") => {
                    let ::core::option::Option::Some(event) = ::channels::__private::decode_message::<
                        HashMap<String, String>,
                    >(&message) else {
                        return ::core::result::Result::Ok(());
                    };
                    ::channels::__private::IntoConsumerResult::into_consumer_result(
                        <Chat>::joined(self, handle, event).await,
                    )
                }
                ::core::option::Option::Some("chat.left") => {
                    let ::core::option::Option::Some(event) = ::channels::__private::decode_message::<
                        Value,
                    >(&message) else {
                        return ::core::result::Result::Ok(());
                    };
                    ::channels::__private::IntoConsumerResult::into_consumer_result(
                        <Chat>::left(self, handle, event).await,
                    )
                }
                _ => {
                    ::channels::__private::unhandled_websocket_message(handle, message)
                        .await
                }
            }
        }
    }
};
fn main() {}
