use bytes::Bytes;
use channels::consumer;
use channels::prelude::*;
use http::StatusCode;
pub struct Item {
    /// The connection's scope (added by `#[consumer]`).
    pub scope: ::channels::Scope,
    id: u64,
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::FromScope for Item {
        fn from_scope(
            scope: ::channels::__private::Scope,
        ) -> ::core::result::Result<Self, ::channels::__private::ConsumerError> {
            ::core::result::Result::Ok(Self {
                id: ::channels::__private::url_param(&scope, "id")?,
                scope,
            })
        }
    }
    #[automatically_derived]
    impl ::channels::__private::Consumer for Item {
        const PROTOCOL: &'static str = "http";
        const URL_PARAMS: &'static [&'static str] = &["id"];
        type App = ::channels::__private::ConsumerApp<Self>;
        fn app() -> Self::App {
            ::channels::__private::ConsumerApp::http(
                <Self as ::channels::__private::FromScope>::from_scope,
            )
        }
    }
};
impl Item {
    async fn handle(
        &mut self,
        _body: Bytes,
        response: &mut HttpResponse,
    ) -> Result<(), ConsumerError> {
        response.text(StatusCode::OK, self.id.to_string()).await?;
        Ok(())
    }
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::HttpConsumer for Item {
        const RECEIVES_CHANNEL_MESSAGES: bool = false;
        async fn handle(
            &mut self,
            body: ::channels::__private::Bytes,
            response: &mut ::channels::__private::HttpResponse,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            ::channels::__private::IntoConsumerResult::into_consumer_result(
                <Item>::handle(self, body, response).await,
            )
        }
    }
};
fn main() {}
