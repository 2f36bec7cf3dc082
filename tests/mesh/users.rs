//! The user service through the API: profiles, search and paging, sessions (devices), and
//! administration (listing, disabling, roles).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    Client, PASSWORD, TestMesh, Tokens, assert_problem, unique_phone, wait_until,
};
use crate::social_friends::ok;

/// The phone that the test settings make an administrator when it registers.
const ADMIN_PHONE: &str = "+10000000001";

/// Percent-encodes a query value (every byte but the unreserved ones).
pub fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn patch_me(c: &Client, token: &str, body: Value) -> (StatusCode, Value) {
    c.send(Method::PATCH, "/v1/users/me", Some(token), Some(&body))
        .await
}

/// The ids of a page's items, in order.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {page}"))
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect()
}

fn nicknames(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {page}"))
        .iter()
        .map(|u| u["nickname"].as_str().expect("nickname").to_owned())
        .collect();
    names.sort();
    names
}

/// Registers the bootstrap administrator and logs it in.
async fn admin(c: &Client) -> (Value, Tokens) {
    let profile = c.register(ADMIN_PHONE, "Root").await;
    assert_eq!(
        profile["roles"],
        json!(["user", "super_admin"]),
        "bootstrap admin roles"
    );
    (profile, c.login(ADMIN_PHONE).await)
}

/// Logs `phone` in and returns the raw answer.
async fn try_login(c: &Client, phone: &str) -> (StatusCode, Value) {
    c.post(
        "/v1/auth/login",
        json!({ "phone": phone, "password": PASSWORD }),
    )
    .await
}

/// Waits until `token` is refused as revoked on `/v1/users/me`.
pub async fn wait_revoked(c: &Client, token: &str) {
    wait_until("session revoked at the edge", || async {
        c.get_as("/v1/users/me", token).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_problem(
        &c.get_as("/v1/users/me", token).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );
}

/// PATCH /v1/users/me changes only the given fields, "" clears the avatar, and bad values are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_updates_change_only_given_fields() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (registered, tokens) = c.user("Ann").await;
    assert_eq!(registered["sex"], "unspecified");
    assert_eq!(registered["avatar"], Value::Null);

    let (status, me) = patch_me(
        c,
        &tokens.access,
        json!({ "nickname": "  Annie ", "avatar": "https://img.example/a.png", "sex": "female" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (
            me["nickname"].as_str(),
            me["avatar"].as_str(),
            me["sex"].as_str()
        ),
        (
            Some("Annie"),
            Some("https://img.example/a.png"),
            Some("female")
        )
    );
    assert_eq!(me["phone"], registered["phone"]);

    // Absent fields stay; the change is what GET /me sees.
    let (status, me) = patch_me(c, &tokens.access, json!({ "sex": "other" })).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let (_, fetched) = c.get_as("/v1/users/me", &tokens.access).await;
    for (field, expected) in [
        ("nickname", json!("Annie")),
        ("avatar", json!("https://img.example/a.png")),
        ("sex", json!("other")),
    ] {
        assert_eq!(me[field], expected, "{field} in the reply");
        assert_eq!(fetched[field], expected, "{field} in GET /me");
    }

    // An empty avatar clears it.
    let (status, me) = patch_me(c, &tokens.access, json!({ "avatar": "" })).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["avatar"], Value::Null);
    assert_eq!(
        c.get_as("/v1/users/me", &tokens.access).await.1["avatar"],
        Value::Null
    );

    for bad in [
        json!({ "avatar": "javascript:alert(1)" }),
        json!({ "avatar": "https://a b" }),
        json!({ "avatar": "ftp://x.example/a" }),
        json!({ "nickname": "   " }),
        json!({ "nickname": "" }),
        json!({ "nickname": "a\u{7}b" }),
    ] {
        assert_problem(
            &patch_me(c, &tokens.access, bad).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    let (status, _) = patch_me(c, &tokens.access, json!({ "sex": "robot" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Refused updates changed nothing.
    let (_, after) = c.get_as("/v1/users/me", &tokens.access).await;
    assert_eq!(
        (
            after["nickname"].as_str(),
            after["avatar"].clone(),
            after["sex"].as_str()
        ),
        (Some("Annie"), Value::Null, Some("other"))
    );
    // Without a token nothing changes either.
    let (status, _) = c
        .send(
            Method::PATCH,
            "/v1/users/me",
            None,
            Some(&json!({ "nickname": "Mallory" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    mesh.stop().await;
}

/// GET /v1/users/{id} shows public fields only; unknown ids are 404, malformed ones 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_are_seen_through_their_public_profile() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, viewer) = c.user("Viewer").await;
    let (bob, bob_tokens) = c.user("Bob").await;
    patch_me(
        c,
        &bob_tokens.access,
        json!({ "avatar": "https://img.example/b.png", "sex": "male" }),
    )
    .await;

    let (status, seen) = c
        .get_as(
            &format!("/v1/users/{}", bob["id"].as_str().unwrap()),
            &viewer.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let mut keys: Vec<&String> = seen.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["avatar", "id", "nickname", "sex"],
        "only public fields: {seen}"
    );
    assert_eq!(
        (
            seen["id"].clone(),
            seen["nickname"].as_str(),
            seen["avatar"].as_str(),
            seen["sex"].as_str()
        ),
        (
            bob["id"].clone(),
            Some("Bob"),
            Some("https://img.example/b.png"),
            Some("male")
        )
    );

    assert_problem(
        &c.get_as(&format!("/v1/users/{}", Uuid::now_v7()), &viewer.access)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for malformed in ["nope", "123", "00000000-0000-0000-0000-00000000000g"] {
        let answer = c
            .get_as(&format!("/v1/users/{malformed}"), &viewer.access)
            .await;
        assert_eq!(
            answer.0,
            StatusCode::BAD_REQUEST,
            "{malformed}: {}",
            answer.1
        );
        assert!(answer.1["code"].is_string(), "{}", answer.1);
    }
    let anonymous = c
        .get(&format!("/v1/users/{}", bob["id"].as_str().unwrap()))
        .await;
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    mesh.stop().await;
}

/// GET /v1/users finds by exact phone, by nickname substring (case-insensitive, wildcards
/// literal) or by ids, and refuses anything but exactly one filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_found_by_phone_nickname_or_ids() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, me) = c.user("Searcher").await;
    let mut phones = Vec::new();
    let mut profiles = Vec::new();
    for nickname in ["Alpha Wolf", "alpha%cat", "alphaXcat", "alpha_cat", "Beta"] {
        let phone = unique_phone();
        profiles.push(c.register(&phone, nickname).await);
        phones.push(phone);
    }
    let find = |query: String| {
        let token = me.access.clone();
        async move { c.get_as(&format!("/v1/users?{query}"), &token).await }
    };

    // Exact phone, with or without '+'; a prefix of a phone finds nobody.
    let (status, page) = find(format!("phone={}", enc(&phones[0]))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), [profiles[0]["id"].as_str().unwrap()]);
    assert!(
        page["items"][0].get("phone").is_none(),
        "search shows public fields only: {page}"
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = find(format!("phone={}", enc(phones[0].trim_start_matches('+')))).await;
    assert_eq!(ids(&page).len(), 1);
    let (_, page) = find(format!("phone={}", enc(&phones[0][..8]))).await;
    assert!(ids(&page).is_empty(), "prefix matched: {page}");

    // Nickname substring, case-insensitive.
    let (_, page) = find("nickname=ALPHA".into()).await;
    assert_eq!(
        nicknames(&page),
        ["Alpha Wolf", "alpha%cat", "alphaXcat", "alpha_cat"]
    );
    let (_, page) = find("nickname=wOlF".into()).await;
    assert_eq!(nicknames(&page), ["Alpha Wolf"]);
    // '%' and '_' are literal characters, not wildcards.
    let (_, page) = find(format!("nickname={}", enc("%"))).await;
    assert_eq!(nicknames(&page), ["alpha%cat"]);
    let (_, page) = find(format!("nickname={}", enc("a_c"))).await;
    assert_eq!(nicknames(&page), ["alpha_cat"]);
    let (_, page) = find(format!("nickname={}", enc("a%c"))).await;
    assert_eq!(nicknames(&page), ["alpha%cat"]);
    let (_, page) = find(format!("nickname={}", enc("\\"))).await;
    assert!(nicknames(&page).is_empty(), "backslash matched: {page}");
    let (_, page) = find("nickname=nobody".into()).await;
    assert!(nicknames(&page).is_empty());

    // A list of ids; unknown ids are simply absent.
    let wanted = [
        profiles[1]["id"].as_str().unwrap(),
        profiles[4]["id"].as_str().unwrap(),
    ];
    let (status, page) = find(format!(
        "ids={},{},{}",
        wanted[0],
        Uuid::now_v7(),
        wanted[1]
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut found = ids(&page);
    found.sort();
    let mut expected = wanted.to_vec();
    expected.sort();
    assert_eq!(found, expected);

    // Exactly one filter.
    for query in [
        String::new(),
        format!("phone={}&nickname=alpha", enc(&phones[0])),
        "nickname=a&ids=".to_owned() + wanted[0],
        "limit=5".into(),
    ] {
        assert_problem(
            &find(query.clone()).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    for bad in ["ids=nope", "nickname=%20%20", "phone=abc"] {
        assert_problem(
            &find(bad.into()).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    let ids_too_many: Vec<String> = (0..101).map(|_| Uuid::now_v7().to_string()).collect();
    let answer = find(format!("ids={}", ids_too_many.join(","))).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    assert_problem(
        &c.get("/v1/users?nickname=alpha").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    mesh.stop().await;
}

/// Paging with `limit` and `next_cursor` returns every match exactly once, in id order; page
/// sizes and cursors are validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_search_pages_through_every_match_once() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, me) = c.user("Someone else").await;
    let mut registered = Vec::new();
    for i in 0..5 {
        registered.push(
            c.register(&unique_phone(), &format!("Pager {i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    c.register(&unique_phone(), "Not matching").await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            None => "nickname=pager&limit=2".to_owned(),
            Some(cursor) => format!("nickname=pager&limit=2&cursor={}", enc(cursor)),
        };
        let (status, page) = c.get_as(&format!("/v1/users?{query}"), &me.access).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = ids(&page);
        assert!(items.len() <= 2, "page larger than the limit: {page}");
        seen.extend(items);
        pages += 1;
        assert!(pages <= 5, "paging does not end");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, registered, "every match once, in creation (id) order");

    // A page exactly as large as the rest ends without a cursor.
    let (_, page) = c
        .get_as("/v1/users?nickname=pager&limit=5", &me.access)
        .await;
    assert_eq!(ids(&page), registered);
    assert_eq!(page["next_cursor"], Value::Null);
    // The default page size covers them all as well.
    let (_, page) = c.get_as("/v1/users?nickname=pager", &me.access).await;
    assert_eq!(ids(&page).len(), 5);

    for query in [
        "nickname=pager&limit=0",
        "nickname=pager&limit=101",
        "nickname=pager&cursor=nope",
        "nickname=pager&cursor=12345",
    ] {
        assert_problem(
            &c.get_as(&format!("/v1/users?{query}"), &me.access).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    for query in [
        "nickname=pager&limit=-1",
        "nickname=pager&limit=abc",
        &format!("nickname=pager&cursor={}", "c".repeat(65)),
    ] {
        let answer = c.get_as(&format!("/v1/users?{query}"), &me.access).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{query}: {}", answer.1);
        assert!(answer.1["code"].is_string(), "{}", answer.1);
    }
    assert_eq!(
        c.get_as("/v1/users?nickname=pager&limit=100", &me.access)
            .await
            .0,
        StatusCode::OK
    );
    mesh.stop().await;
}

/// Each login is a session listed with its device; revoking another one ends it (access and
/// refresh token), and only the caller's own active sessions can be revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_revoked_per_device() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    let sign_in = |path: &'static str, device: &'static str| {
        let phone = phone.clone();
        async move {
            let body = json!({
                "phone": phone, "password": PASSWORD, "nickname": "Ann", "device_name": device
            });
            let (status, body) = c.post(path, body).await;
            assert!(status.is_success(), "{body}");
            Tokens::from(&body)
        }
    };
    // Registering signs the laptop in; the phone logs in.
    let laptop = sign_in("/v1/auth/register", "laptop").await;
    let phone_device = sign_in("/v1/auth/login", "phone").await;

    let (status, list) = c.get_as("/v1/sessions", &laptop.access).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{list}");
    for item in items {
        let is_laptop = item["id"] == laptop.session_id.as_str();
        assert!(
            is_laptop || item["id"] == phone_device.session_id.as_str(),
            "foreign session {item}"
        );
        assert_eq!(
            item["device_name"],
            if is_laptop { "laptop" } else { "phone" }
        );
        assert_eq!(
            item["current"], is_laptop,
            "current only for the caller's session: {item}"
        );
    }
    // From the other device, the other one is current.
    let (_, list) = c.get_as("/v1/sessions", &phone_device.access).await;
    let current: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], phone_device.session_id.as_str());

    // Someone else's session, an unknown one, and a malformed id cannot be revoked.
    let (_, other) = c.user("Bob").await;
    let foreign = c
        .send(
            Method::DELETE,
            &format!("/v1/sessions/{}", other.session_id),
            Some(&laptop.access),
            None,
        )
        .await;
    assert_problem(&foreign, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        c.get_as("/v1/users/me", &other.access).await.0,
        StatusCode::OK,
        "the foreign session survived"
    );
    let unknown = c
        .send(
            Method::DELETE,
            &format!("/v1/sessions/{}", Uuid::now_v7()),
            Some(&laptop.access),
            None,
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
    let malformed = c
        .send(
            Method::DELETE,
            "/v1/sessions/nope",
            Some(&laptop.access),
            None,
        )
        .await;
    assert_eq!(malformed.0, StatusCode::BAD_REQUEST, "{}", malformed.1);

    // Revoke the phone from the laptop.
    let revoked = c
        .send(
            Method::DELETE,
            &format!("/v1/sessions/{}", phone_device.session_id),
            Some(&laptop.access),
            None,
        )
        .await;
    assert_eq!(revoked.0, StatusCode::OK, "{}", revoked.1);
    assert_eq!(revoked.1["revoked_sessions"], 1);
    wait_revoked(c, &phone_device.access).await;
    let refresh = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": phone_device.refresh }),
        )
        .await;
    assert_problem(&refresh, StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    // Revoking it again: it is no longer active.
    let again = c
        .send(
            Method::DELETE,
            &format!("/v1/sessions/{}", phone_device.session_id),
            Some(&laptop.access),
            None,
        )
        .await;
    assert_problem(&again, StatusCode::NOT_FOUND, "not_found");

    // The laptop is unaffected and alone in the list.
    assert_eq!(
        c.get_as("/v1/users/me", &laptop.access).await.0,
        StatusCode::OK
    );
    let (_, list) = c.get_as("/v1/sessions", &laptop.access).await;
    let remaining: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(remaining, [laptop.session_id.as_str()]);
    assert_eq!(
        c.post(
            "/v1/auth/refresh",
            json!({ "refresh_token": laptop.refresh })
        )
        .await
        .0,
        StatusCode::OK
    );
    mesh.stop().await;
}

/// Admin routes are for admins only; the bootstrap admin lists accounts in pages, optionally
/// only disabled ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_accounts_and_others_are_forbidden() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (admin_profile, admin) = admin(c).await;
    let (bob, bob_tokens) = c.user("Bob").await;
    let (carol, _) = c.user("Carol").await;
    let bob_id = bob["id"].as_str().unwrap();

    assert_problem(
        &c.get_as("/v1/admin/users", &bob_tokens.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    for path in [
        format!("/v1/admin/users/{}/disable", carol["id"].as_str().unwrap()),
        format!("/v1/admin/users/{}/enable", carol["id"].as_str().unwrap()),
    ] {
        assert_problem(
            &c.post_as(&path, &bob_tokens.access, json!({})).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    let self_promotion = c
        .send(
            Method::PUT,
            &format!("/v1/admin/users/{bob_id}/roles"),
            Some(&bob_tokens.access),
            Some(&json!({ "roles": ["admin"] })),
        )
        .await;
    assert_problem(&self_promotion, StatusCode::FORBIDDEN, "forbidden");
    assert_problem(
        &c.get("/v1/admin/users").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // Pages of two, in creation order, with private fields (admins see phones).
    let everyone = [
        admin_profile["id"].clone(),
        bob["id"].clone(),
        carol["id"].clone(),
    ];
    let (status, first) = c.get_as("/v1/admin/users?limit=2", &admin.access).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["phone"], ADMIN_PHONE);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = c
        .get_as(
            &format!("/v1/admin/users?limit=2&cursor={}", enc(cursor)),
            &admin.access,
        )
        .await;
    assert_eq!(second["next_cursor"], Value::Null);
    let listed: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(listed, everyone);

    let (_, disabled) = c
        .get_as("/v1/admin/users?disabled=true", &admin.access)
        .await;
    assert_eq!(ids(&disabled), Vec::<String>::new());
    let (status, _) = c
        .post_as(
            &format!("/v1/admin/users/{bob_id}/disable"),
            &admin.access,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, disabled) = c
        .get_as("/v1/admin/users?disabled=true", &admin.access)
        .await;
    assert_eq!(ids(&disabled), [bob_id]);
    assert_eq!(disabled["items"][0]["disabled"], true);
    let (_, enabled) = c
        .get_as("/v1/admin/users?disabled=false", &admin.access)
        .await;
    assert_eq!(enabled["items"].as_array().unwrap().len(), 2);
    assert!(!ids(&enabled).contains(&bob_id.to_owned()));
    let (_, all) = c.get_as("/v1/admin/users", &admin.access).await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        3,
        "admins see disabled accounts too"
    );

    for query in ["limit=0", "limit=101", "cursor=nope"] {
        assert_problem(
            &c.get_as(&format!("/v1/admin/users?{query}"), &admin.access)
                .await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    assert_eq!(
        c.get_as("/v1/admin/users?disabled=maybe", &admin.access)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    mesh.stop().await;
}

/// Disabling an account revokes its sessions and refuses its logins and refreshes until it is
/// enabled again; meanwhile it is hidden from other users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_an_account_locks_it_out_until_enabled() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (admin_profile, admin) = admin(c).await;
    let bob_phone = unique_phone();
    let bob = c.register(&bob_phone, "Bob").await;
    let bob_id = bob["id"].as_str().unwrap();
    let bob_laptop = c.login(&bob_phone).await;
    let bob_phone_session = c.login(&bob_phone).await;
    let (_, viewer) = c.user("Viewer").await;
    assert_eq!(
        c.get_as(&format!("/v1/users/{bob_id}"), &viewer.access)
            .await
            .0,
        StatusCode::OK
    );

    let (status, profile) = c
        .post_as(
            &format!("/v1/admin/users/{bob_id}/disable"),
            &admin.access,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["disabled"], true);
    // Every session is refused, at once or within moments.
    wait_revoked(c, &bob_laptop.access).await;
    wait_revoked(c, &bob_phone_session.access).await;
    assert_problem(
        &try_login(c, &bob_phone).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
    );
    let refresh = c
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": bob_laptop.refresh }),
        )
        .await;
    assert_eq!(refresh.0, StatusCode::UNAUTHORIZED, "{}", refresh.1);
    // Hidden from others: by id and by search.
    assert_problem(
        &c.get_as(&format!("/v1/users/{bob_id}"), &viewer.access)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (_, page) = c
        .get_as(
            &format!("/v1/users?phone={}", enc(&bob_phone)),
            &viewer.access,
        )
        .await;
    assert!(ids(&page).is_empty(), "disabled account found: {page}");
    // Disabling twice is harmless.
    assert_eq!(
        c.post_as(
            &format!("/v1/admin/users/{bob_id}/disable"),
            &admin.access,
            json!({})
        )
        .await
        .0,
        StatusCode::OK
    );

    // An admin cannot disable themselves.
    let own = c
        .post_as(
            &format!(
                "/v1/admin/users/{}/disable",
                admin_profile["id"].as_str().unwrap()
            ),
            &admin.access,
            json!({}),
        )
        .await;
    assert_problem(&own, StatusCode::CONFLICT, "conflict");
    assert_eq!(
        c.get_as("/v1/admin/users", &admin.access).await.0,
        StatusCode::OK,
        "the admin is still enabled"
    );
    // Unknown accounts.
    for action in ["disable", "enable"] {
        let unknown = c
            .post_as(
                &format!("/v1/admin/users/{}/{action}", Uuid::now_v7()),
                &admin.access,
                json!({}),
            )
            .await;
        assert_problem(&unknown, StatusCode::NOT_FOUND, "not_found");
    }

    let (status, profile) = c
        .post_as(
            &format!("/v1/admin/users/{bob_id}/enable"),
            &admin.access,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["disabled"], false);
    let fresh = c.login(&bob_phone).await;
    assert_eq!(
        c.get_as("/v1/users/me", &fresh.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.get_as(&format!("/v1/users/{bob_id}"), &viewer.access)
            .await
            .0,
        StatusCode::OK
    );
    // Enabling does not bring the revoked sessions back.
    assert_problem(
        &c.get_as("/v1/users/me", &bob_laptop.access).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    );
    mesh.stop().await;
}

/// Roles are replaced by holders of `roles:grant`: a promoted user can administrate, a
/// demoted one loses the rights at once, an admin cannot touch a `super_admin` (it does not
/// hold `*:*`), the last `super_admin` keeps the role, and unknown accounts are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_grant_and_revoke_roles() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (root_profile, root) = admin(c).await;
    let root_id = root_profile["id"].as_str().unwrap();
    let bob_phone = unique_phone();
    let bob = c.register(&bob_phone, "Bob").await;
    let bob_id = bob["id"].as_str().unwrap();
    let carol_phone = unique_phone();
    let carol = c.register(&carol_phone, "Carol").await;
    let carol_id = carol["id"].as_str().unwrap();
    let set_roles = |token: String, user: String, roles: Value| async move {
        c.send(
            Method::PUT,
            &format!("/v1/admin/users/{user}/roles"),
            Some(&token),
            Some(&json!({ "roles": roles })),
        )
        .await
    };

    let before = c.login(&bob_phone).await;
    assert_problem(
        &c.get_as("/v1/admin/users", &before.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let (status, profile) = set_roles(root.access.clone(), bob_id.into(), json!(["admin"])).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["roles"], json!(["user", "admin"]));
    let promoted = c.login(&bob_phone).await;
    assert_eq!(
        c.get_as("/v1/admin/users", &promoted.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.get_as("/v1/users/me", &promoted.access).await.1["roles"],
        json!(["user", "admin"])
    );

    // The admin promotes Carol to admin, and demotes her again: she loses the rights at once.
    let (status, _) = set_roles(promoted.access.clone(), carol_id.into(), json!(["admin"])).await;
    assert_eq!(status, StatusCode::OK);
    let carol_admin = c.login(&carol_phone).await;
    assert_eq!(
        c.get_as("/v1/admin/users", &carol_admin.access).await.0,
        StatusCode::OK
    );
    let (status, profile) = set_roles(promoted.access.clone(), carol_id.into(), json!([])).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["roles"], json!(["user"]));
    assert_problem(
        &c.get_as("/v1/admin/users", &carol_admin.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // An admin does not hold `*:*`: it can neither make nor unmake a super_admin.
    for (user, roles) in [(carol_id, json!(["super_admin"])), (root_id, json!([]))] {
        assert_problem(
            &set_roles(promoted.access.clone(), user.into(), roles).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    // The last super_admin keeps the role, in any spelling.
    for roles in [json!([]), json!(["user"]), json!(["admin"])] {
        assert_problem(
            &set_roles(root.access.clone(), root_id.into(), roles).await,
            StatusCode::CONFLICT,
            "conflict",
        );
    }
    // Duplicates collapse; `user` is always kept.
    let (status, profile) = set_roles(
        root.access.clone(),
        carol_id.into(),
        json!(["admin", "admin", "moderator"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["roles"], json!(["user", "admin", "moderator"]));

    assert_problem(
        &set_roles(
            promoted.access.clone(),
            Uuid::now_v7().to_string(),
            json!(["admin"]),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for bad in [
        json!(["root"]),
        json!(["Admin"]),
        json!("admin"),
        json!(null),
    ] {
        let answer = set_roles(promoted.access.clone(), carol_id.into(), bad.clone()).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{bad}: {}", answer.1);
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_signs_in_at_once() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    let (status, reply) = c
        .post(
            "/v1/auth/register",
            json!({"phone": phone, "password": PASSWORD, "nickname": "Neo", "device_name": "phone"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // The profile, as before ...
    assert_eq!(reply["nickname"], "Neo");
    assert_eq!(reply["phone"], phone.as_str());
    // ... and a session, as login answers it.
    assert_eq!(reply["token_type"], "Bearer");
    assert_eq!(reply["user_id"], reply["id"]);
    let access = reply["access_token"].as_str().expect("an access token");
    let me = ok(c.get_as("/v1/users/me", access).await);
    assert_eq!(me["id"], reply["id"]);
    let sessions = ok(c.get_as("/v1/sessions", access).await);
    let listed = sessions["items"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{sessions}");
    assert_eq!(listed[0]["id"], reply["session_id"]);
    assert_eq!(listed[0]["device_name"], "phone");
    let refreshed = ok(c
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": reply["refresh_token"]}),
        )
        .await);
    assert_eq!(refreshed["session_id"], reply["session_id"]);
    mesh.stop().await;
}

/// An account keeps at most 100 active sessions: a sign-in past them ends the least recently
/// used (revoked like a logout, so their tokens are refused), the device list never shows more,
/// and logging out everywhere revokes only sessions whose tokens may still live, not every
/// session the account ever opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_an_account_are_capped() {
    use mesh_contracts::Bucket;
    use mesh_contracts::nats_permissions::NatsRole;

    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    let registered = c.register(&phone, "Ann").await;
    let user_id = Uuid::parse_str(registered["id"].as_str().unwrap()).unwrap();
    let first = Tokens::from(&registered);
    // 150 older live sessions (one a minute, the newest a minute old) and 30 that expired a
    // day ago, as thousands of sign-ins before the cap would have left.
    let db = sqlx::PgPool::connect(mesh.database_url())
        .await
        .expect("connect to the test database");
    sqlx::query(
        "INSERT INTO users.sessions (id, user_id, device_name, created_at, last_used_at, expires_at)
         SELECT gen_random_uuid(), $1, 'old ' || n, now() - n * interval '1 minute',
                now() - n * interval '1 minute',
                CASE WHEN n <= 150 THEN now() + interval '1 day' ELSE now() - interval '1 day' END
         FROM generate_series(1, 180) AS n",
    )
    .bind(user_id)
    .execute(&db)
    .await
    .expect("insert old sessions");

    // The list shows the 100 newest, the caller's own first.
    let list = ok(c.get_as("/v1/sessions", &first.access).await);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 100, "listed {}", items.len());
    assert_eq!(items[0]["id"], first.session_id.as_str());
    assert_eq!(items[0]["current"], true);
    assert_eq!(items[99]["device_name"], "old 99");

    // A sign-in ends the 52 least recently used of the 152 live sessions.
    let newest = c.login(&phone).await;
    let evicted: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM users.sessions WHERE user_id = $1 AND revoked_at IS NOT NULL",
    )
    .bind(user_id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(evicted.len(), 52);
    let live: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(device_name, '') FROM users.sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(user_id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(live.len(), 100);
    assert!(live.iter().any(|name| name == "old 98"), "{live:?}");
    assert!(!live.iter().any(|name| name == "old 99"), "{live:?}");
    // Their revocations were published first, as for a logout.
    let nats = mesh.nats_client_as(NatsRole::User).await;
    let revoked = async_nats::jetstream::new(nats)
        .get_key_value(mesh.settings.prefix.bucket(Bucket::Revoked))
        .await
        .expect("the REVOKED bucket");
    for id in &evicted {
        let entry = revoked.get(id.to_string()).await.expect("read REVOKED");
        assert_eq!(entry.as_deref(), Some(user_id.to_string().as_bytes()));
    }
    let list = ok(c.get_as("/v1/sessions", &newest.access).await);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["id"], newest.session_id.as_str());

    // Logging out everywhere revokes the 100 live sessions, not the 30 long expired.
    let out = ok(c
        .post_as("/v1/auth/logout-all", &newest.access, json!({}))
        .await);
    assert_eq!(out["revoked_sessions"], 100, "{out}");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users.sessions WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(left, 30, "the expired sessions need no revocation");
    wait_revoked(c, &first.access).await;
    mesh.stop().await;
}
