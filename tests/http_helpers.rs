//! What a Django developer reaches for in HTTP views: allowed methods (405), form posts
//! (`request.POST`), `redirect`, response cookies; in-process and over a real socket.

mod support;

use channels::consumer::Form;
use channels::prelude::*;
use channels::testing::{HttpCommunicator, TestError};
use channels::{consumer, routing};
use support::{TestServer, raw_http};

/// `POST /vote/` with a form: counts `choice` values and redirects to the poll; `GET` answers
/// the form's target. Other methods: 405.
#[consumer(http, methods = ["GET", "POST"])]
struct Vote;

#[consumer]
impl Vote {
    async fn handle(&mut self, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        if self.scope.method == Method::GET {
            response.text(StatusCode::OK, "POST choice=...").await?;
            return Ok(());
        }
        let form = match Form::parse(&self.scope, &body) {
            Ok(form) => form,
            Err(err) => {
                response.text(StatusCode::BAD_REQUEST, err.to_string()).await?;
                return Ok(());
            }
        };
        let choices: Vec<&str> = form.get_all("choice").collect();
        response.redirect(&format!("/poll/?voted={}", choices.join(","))).await?;
        Ok(())
    }
}

fn app() -> ProtocolTypeRouter {
    routing! { http: [ "vote/" => Vote ] }
}

#[tokio::test]
async fn methods_forms_and_redirects_in_process() {
    let posted = HttpCommunicator::new(app(), Method::POST, "/vote/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("choice=red&choice=caf%C3%A9+au+lait&other=1")
        .get_response()
        .await
        .unwrap();
    assert_eq!(posted.status, StatusCode::FOUND);
    // Percent-encoded as Django's `iri_to_uri` does.
    assert_eq!(posted.header("location"), Some("/poll/?voted=red,caf%C3%A9%20au%20lait"));
    assert!(posted.body.is_empty());

    let json = HttpCommunicator::new(app(), Method::POST, "/vote/")
        .header("content-type", "application/json")
        .body("{}")
        .get_response()
        .await
        .unwrap();
    assert_eq!(json.status, StatusCode::BAD_REQUEST);
    assert!(json.text().contains("not a form"), "{}", json.text());

    let get = HttpCommunicator::new(app(), Method::GET, "/vote/").get_response().await.unwrap();
    assert_eq!(get.status, StatusCode::OK);

    let delete = HttpCommunicator::new(app(), Method::DELETE, "/vote/").get_response().await;
    let Err(TestError::App(AppError::MethodNotAllowed(refused))) = delete else { panic!("{delete:?}") };
    assert_eq!((refused.method.as_str(), refused.allowed), ("DELETE", vec!["GET".to_owned(), "POST".to_owned()]));
}

#[tokio::test]
async fn a_refused_method_is_405_with_allow_over_a_socket() {
    let server = TestServer::start(app()).await;
    let response =
        raw_http(server.addr, b"PUT /vote/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc").await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(response.to_ascii_lowercase().contains("\r\nallow: get, post\r\n"), "{response}");

    let posted = raw_http(
        server.addr,
        b"POST /vote/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 9\r\n\r\nchoice=go",
    )
    .await;
    assert!(posted.starts_with("HTTP/1.1 302"), "{posted}");
    assert!(posted.to_ascii_lowercase().contains("\r\nlocation: /poll/?voted=go\r\n"), "{posted}");
    server.shutdown().await;
}
