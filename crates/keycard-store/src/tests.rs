//! The store's test suite, run on every engine `testing::engines()` names.

use keycard_core::{AuditEvent, Method, Outcome};

use crate::testing::{TempStore, engines};
use crate::{AuditQuery, ChangeKind, CredentialKind, NewApiKey, NewUser, StoreError};

fn key(id: &str, subject: &str, lookup: u8, now: i64) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        subject: subject.into(),
        lookup: [lookup; 32],
        name: Some("label".into()),
        scopes: "a:read b:write".into(),
        created_at: now,
        expires_at: None,
    }
}

async fn each_engine<F, Fut>(f: F)
where
    F: Fn(TempStore) -> Fut,
    Fut: std::future::Future<Output = TempStore>,
{
    for engine in engines() {
        let t = TempStore::new(engine)
            .await
            .unwrap_or_else(|e| panic!("{engine} store did not open: {e}"));
        let t = f(t).await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn api_key_lifecycle() {
    each_engine(|t| async move {
        let s = &t.store;
        s.create_api_key(&key("key_1", "svc", 1, 100))
            .await
            .unwrap();
        let row = s.find_api_key(&[1; 32]).await.unwrap().unwrap();
        assert_eq!((row.id.as_str(), row.subject.as_str()), ("key_1", "svc"));
        assert_eq!(row.scopes, "a:read b:write");
        assert!(s.find_api_key(&[2; 32]).await.unwrap().is_none());

        // Same lookup twice is refused by the unique index.
        assert!(
            s.create_api_key(&key("key_x", "svc", 1, 100))
                .await
                .is_err()
        );

        s.revoke_credential(CredentialKind::ApiKey, "key_1", 200)
            .await
            .unwrap();
        assert_eq!(s.get_api_key("key_1").await.unwrap().revoked_at, Some(200));
        assert!(matches!(
            s.revoke_credential(CredentialKind::ApiKey, "key_1", 201)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.revoke_credential(CredentialKind::ApiKey, "nope", 201)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        // The kind is part of the name: an API key is no HMAC key or certificate binding.
        for other in [CredentialKind::Hmac, CredentialKind::Cert] {
            assert!(matches!(
                s.revoke_credential(other, "key_1", 201).await,
                Err(StoreError::NotFound { .. })
            ));
        }
        t
    })
    .await;
}

#[tokio::test]
async fn user_lifecycle_and_feed() {
    each_engine(|t| async move {
        let s = &t.store;
        let before = s.latest_revision().await.unwrap();
        let new = NewUser {
            name: "jürgen".into(),
            password_id: "pwd_1".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            digest_sealed: Some(vec![1, 2, 3]),
            scopes: "a:read".into(),
            created_at: 100,
        };
        assert!(
            !format!("{new:?}").contains("argon2id"),
            "Debug hides the hash"
        );
        assert!(!s.subject_changed_since(before).await.unwrap());
        s.create_api_key(&key("key_u", "other-svc", 77, 100))
            .await
            .unwrap();
        assert!(
            !s.subject_changed_since(before).await.unwrap(),
            "a key is no subject change"
        );
        s.create_user(&new).await.unwrap();
        assert!(s.subject_changed_since(before).await.unwrap());
        let after = s.latest_revision().await.unwrap();
        assert!(!s.subject_changed_since(after).await.unwrap());
        let u = s.get_user("jürgen").await.unwrap();
        assert_eq!(u.password_id, "pwd_1");
        assert_eq!(u.digest_sealed.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(
            (u.created_at, u.password_changed_at, u.disabled_at),
            (100, 100, None)
        );
        assert!(
            !format!("{u:?}").contains("argon2id"),
            "Debug hides the hash"
        );
        assert!(matches!(
            s.create_user(&new).await,
            Err(StoreError::Conflict(_))
        ));
        // A service subject's name is taken too, and a service is not a user.
        s.create_api_key(&key("key_1", "svc", 1, 100))
            .await
            .unwrap();
        assert!(matches!(
            s.create_user(&NewUser {
                name: "svc".into(),
                ..new.clone()
            })
            .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.find_user("svc").await.unwrap().is_none());
        assert_eq!(
            s.digest_user_names().await.unwrap(),
            vec!["jürgen".to_owned()]
        );

        s.set_password("jürgen", "pwd_2", "$argon2id$new", None, 200)
            .await
            .unwrap();
        let u = s.get_user("jürgen").await.unwrap();
        assert_eq!(
            (u.password_id.as_str(), u.password_hash.as_str()),
            ("pwd_2", "$argon2id$new")
        );
        assert_eq!((u.digest_sealed, u.password_changed_at), (None, 200));
        assert!(s.digest_user_names().await.unwrap().is_empty());
        assert!(matches!(
            s.set_password("nobody", "p", "h", None, 1).await,
            Err(StoreError::NotFound { .. })
        ));

        s.set_subject_disabled("jürgen", true, 300).await.unwrap();
        s.set_subject_disabled("jürgen", true, 301).await.unwrap();
        assert_eq!(s.get_user("jürgen").await.unwrap().disabled_at, Some(300));
        s.set_subject_disabled("svc", true, 300).await.unwrap();
        assert!(
            s.find_api_key(&[1; 32])
                .await
                .unwrap()
                .unwrap()
                .subject_disabled
        );
        s.set_subject_disabled("jürgen", false, 400).await.unwrap();
        assert_eq!(s.get_user("jürgen").await.unwrap().disabled_at, None);
        // A name the store does not hold (a rule's or an external issuer's) is recorded as
        // disabled; enabling an unknown name is an error.
        assert!(matches!(
            s.set_subject_disabled("nobody", false, 1).await,
            Err(StoreError::NotFound { .. })
        ));
        s.set_subject_disabled("spiffe://a/w", true, 500)
            .await
            .unwrap();
        assert_eq!(
            s.disabled_subjects().await.unwrap(),
            ["svc", "spiffe://a/w"].map(String::from).to_vec()
        );
        s.set_subject_disabled("spiffe://a/w", false, 501)
            .await
            .unwrap();
        assert_eq!(s.disabled_subjects().await.unwrap(), ["svc"]);
        assert_eq!(s.list_users().await.unwrap().len(), 1);

        let changes = s.changes_since(before, 100).await.unwrap();
        let subjects: Vec<_> = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Subject)
            .map(|c| c.reference.as_str())
            .collect();
        assert_eq!(
            subjects,
            [
                "jürgen",
                "jürgen",
                "jürgen",
                "jürgen",
                "svc",
                "jürgen",
                "spiffe://a/w",
                "spiffe://a/w"
            ]
        );
        t
    })
    .await;
}

#[tokio::test]
async fn signing_keys_rotate_and_stay_published_until_their_tokens_expire() {
    each_engine(|t| async move {
        let s = &t.store;
        let key = |kid: &str, at: i64| crate::SigningKeyRow {
            kid: kid.into(),
            alg: "ES256".into(),
            sealed: vec![1, 2],
            created_at: at,
            retired_at: None,
            publish_until: None,
        };
        assert!(s.published_signing_keys(0).await.unwrap().is_empty());
        assert!(s.add_signing_key(&key("a", 100), 0, true).await.unwrap());
        assert!(
            !s.add_signing_key(&key("x", 101), 0, true).await.unwrap(),
            "one current key"
        );
        assert!(s.add_signing_key(&key("b", 200), 800, false).await.unwrap());
        let kids = |v: Vec<crate::SigningKeyRow>| v.into_iter().map(|k| k.kid).collect::<Vec<_>>();
        assert_eq!(
            kids(s.published_signing_keys(300).await.unwrap()),
            ["b", "a"]
        );
        let a = &s.published_signing_keys(300).await.unwrap()[1];
        assert_eq!((a.retired_at, a.publish_until), (Some(200), Some(800)));
        assert_eq!(kids(s.published_signing_keys(800).await.unwrap()), ["b"]);
        t
    })
    .await;
}

#[tokio::test]
async fn rotation_keeps_the_old_key_until_the_grace_ends() {
    each_engine(|t| async move {
        let s = &t.store;
        s.create_api_key(&key("key_old", "svc", 1, 100))
            .await
            .unwrap();
        s.rotate_api_key("key_old", &key("key_new", "svc", 2, 150), 160)
            .await
            .unwrap();
        let old = s.get_api_key("key_old").await.unwrap();
        assert_eq!((old.expires_at, old.revoked_at), (Some(160), None));
        let new = s.get_api_key("key_new").await.unwrap();
        assert_eq!(new.rotated_from.as_deref(), Some("key_old"));

        // Rotating with no grace revokes the old key at once.
        s.rotate_api_key("key_new", &key("key_3", "svc", 3, 170), 170)
            .await
            .unwrap();
        assert_eq!(
            s.get_api_key("key_new").await.unwrap().revoked_at,
            Some(170)
        );
        // A revoked or expired key cannot be rotated.
        assert!(matches!(
            s.rotate_api_key("key_new", &key("key_4", "svc", 4, 171), 200)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.rotate_api_key("key_old", &key("key_5", "svc", 5, 171), 200)
                .await,
            Err(StoreError::Conflict(_))
        ));
        let listed: Vec<String> = s
            .list_api_keys(Some("svc"))
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(listed, ["key_3", "key_new", "key_old"]);
        assert!(s.list_api_keys(Some("other")).await.unwrap().is_empty());
        assert_eq!(s.list_api_keys(None).await.unwrap().len(), 3);
        t
    })
    .await;
}

#[tokio::test]
async fn change_feed_is_monotonic_and_names_what_changed() {
    each_engine(|t| async move {
        let s = &t.store;
        let start = s.latest_revision().await.unwrap();
        s.create_api_key(&key("key_1", "svc", 0xab, 100))
            .await
            .unwrap();
        s.revoke_credential(CredentialKind::ApiKey, "key_1", 101)
            .await
            .unwrap();
        let changes = s.changes_since(start, 100).await.unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes.windows(2).all(|w| w[0].revision < w[1].revision));
        assert!(
            changes
                .iter()
                .all(|c| c.kind == ChangeKind::Credential && c.reference == "ab".repeat(32))
        );
        assert_eq!(s.latest_revision().await.unwrap(), changes[1].revision);
        assert!(
            s.changes_since(changes[1].revision, 100)
                .await
                .unwrap()
                .is_empty()
        );
        t
    })
    .await;
}

/// Two processes on one SQLite file (keycard serve and the CLI) write at once: each write
/// transaction takes the write lock up front, so none fails with `database is locked`.
#[tokio::test]
async fn two_stores_on_one_file_write_at_once() {
    each_engine(|t| async move {
        let other = crate::Store::open(&t.url).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40u8 {
            let s = if i % 2 == 0 {
                t.store.clone()
            } else {
                other.clone()
            };
            // A binding reads before it writes: the case a deferred transaction loses.
            tasks.push(tokio::spawn(async move {
                s.create_cert_binding(&crate::NewCertBinding {
                    id: format!("cert_{i}"),
                    subject: format!("svc{}", i % 3),
                    fingerprint: format!("{i:064x}"),
                    lookup: [i; 32],
                    scopes: String::new(),
                    created_at: 100,
                    expires_at: None,
                })
                .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(t.store.list_cert_bindings().await.unwrap().len(), 40);
        other.close().await;
        t
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_commit_revisions_in_order() {
    each_engine(|t| async move {
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let s = t.store.clone();
            tasks.push(tokio::spawn(async move {
                s.create_api_key(&key(&format!("key_{i}"), "svc", i, 100))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let changes = t.store.changes_since(0, 1000).await.unwrap();
        let revs: Vec<i64> = changes.iter().map(|c| c.revision).collect();
        assert_eq!(revs, (1..=20).collect::<Vec<_>>());
        t
    })
    .await;
}

/// Every field survives the store whatever it holds: JSON's special characters, control
/// characters, non-ASCII, and `None` in every optional field.
#[tokio::test]
async fn audit_events_keep_awkward_text_and_nulls() {
    each_engine(|t| async move {
        let awkward = "q\"uote b\\ack n\nl t\tab c\u{1}trl José 🗝 ]},[ null";
        let events = vec![
            AuditEvent {
                ts_ms: 1_700_000_000_123,
                request_id: awkward.into(),
                route: Some(awkward.into()),
                method: Some(Method::Digest),
                outcome: Outcome::Throttled,
                reason: Some(awkward.into()),
                subject: Some(awkward.into()),
                credential_id: Some(awkward.into()),
                ip: Some("2001:db8::1".into()),
                management: None,
                cert_source: None,
            },
            AuditEvent {
                ts_ms: 0,
                request_id: String::new(),
                route: None,
                method: None,
                outcome: Outcome::Failure,
                reason: None,
                subject: None,
                credential_id: None,
                ip: None,
                management: None,
                cert_source: None,
            },
            AuditEvent {
                ts_ms: i64::MAX,
                request_id: "null".into(),
                route: Some("".into()),
                method: Some(Method::Mtls),
                outcome: Outcome::Success,
                reason: Some("null".into()),
                subject: Some("[]".into()),
                credential_id: Some("{}".into()),
                ip: Some("0".into()),
                management: None,
                cert_source: Some(keycard_core::CertSource::Forwarded),
            },
            // A management event: its operation and target come back too.
            AuditEvent {
                ts_ms: 5,
                request_id: "cli-1".into(),
                route: Some("cli".into()),
                method: None,
                outcome: Outcome::Failure,
                reason: Some("not_found".into()),
                subject: None,
                credential_id: Some("cli".into()),
                ip: None,
                management: Some(keycard_core::Management {
                    operation: "key.revoke".into(),
                    target: Some(awkward.into()),
                }),
                cert_source: None,
            },
        ];
        t.store.insert_audit(&events).await.unwrap();
        let back = t
            .store
            .query_audit(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(back, events);
        // A batch of many statements (SQLite: 16 × 256 rows and 4) keeps every event, in order.
        let many: Vec<AuditEvent> = (0..4100)
            .map(|i| AuditEvent {
                ts_ms: 2_000_000_000_000 + i,
                request_id: format!("m{i}"),
                ..events[1].clone()
            })
            .collect();
        t.store.insert_audit(&many).await.unwrap();
        let back = t
            .store
            .query_audit(&AuditQuery {
                limit: 5000,
                since_ms: Some(2_000_000_000_000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.ts_ms != i64::MAX)
            .collect::<Vec<_>>();
        assert_eq!(back.len(), many.len());
        assert!(back == many, "events lost or out of order");
        t
    })
    .await;
}

/// A trigger that makes the database refuse a batch holding an event whose `request_id` is
/// `boom` (no other text of these tests' events is).
async fn refuse_boom(t: &TempStore) {
    let refuse: &[&str] = match &t.store.backend {
        crate::Backend::Sqlite(_) => &[
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON audit_segments \
             WHEN NEW.body LIKE '%\"boom\"%' BEGIN SELECT RAISE(FAIL, 'refused'); END",
        ],
        crate::Backend::Postgres(_) => &[
            "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN \
             IF NEW.body LIKE '%\"boom\"%' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON audit_segments \
             FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
        ],
    };
    for sql in refuse {
        crate::with_pool!(t.store, p => sqlx::query(*sql).execute(p).await.map(|_| ())).unwrap();
    }
}

/// A batch is all or nothing: an event the database refuses (here a trigger's) fails the
/// insert and none of the batch is kept — also the segments already written (a batch larger
/// than a segment is cut in several; the refused event is in the second) — so the writer's
/// retry never stores an event twice.
#[tokio::test]
async fn a_refused_audit_event_keeps_none_of_its_batch() {
    each_engine(|t| async move {
        refuse_boom(&t).await;
        let n = crate::SEGMENT_EVENTS as i64 + 300;
        let batch: Vec<AuditEvent> = (0..n)
            .map(|i| AuditEvent {
                ts_ms: 1_700_000_000_000 + i,
                request_id: if i == n - 10 {
                    "boom".into()
                } else {
                    format!("r{i}")
                },
                route: None,
                method: Some(Method::ApiKey),
                outcome: Outcome::Success,
                reason: None,
                subject: Some("svc".into()),
                credential_id: None,
                ip: None,
                management: None,
                cert_source: None,
            })
            .collect();
        assert!(t.store.insert_audit(&batch).await.is_err());
        let all = AuditQuery {
            limit: 100_000,
            ..Default::default()
        };
        assert_eq!(t.store.query_audit(&all).await.unwrap(), vec![]);
        // Without the refused event the same batch goes in whole, in order.
        let ok: Vec<AuditEvent> = batch
            .into_iter()
            .filter(|e| e.request_id != "boom")
            .collect();
        t.store.insert_audit(&ok).await.unwrap();
        assert!(t.store.query_audit(&all).await.unwrap() == ok);
        t
    })
    .await;
}

/// The server's writer keeps one appender: a refused batch comes back whole (for its retry)
/// and the next batches still go in, in order — on SQLite through a connection opened again.
#[tokio::test]
async fn an_audit_appender_hands_a_refused_batch_back_and_goes_on() {
    each_engine(|t| async move {
        refuse_boom(&t).await;
        let ev = |id: &str| AuditEvent {
            ts_ms: 1_700_000_000_000,
            request_id: id.into(),
            route: Some("/api/".into()),
            method: Some(Method::ApiKey),
            outcome: Outcome::Success,
            reason: None,
            subject: Some("svc".into()),
            credential_id: Some("key_1".into()),
            ip: Some("::1".into()),
            management: None,
            cert_source: None,
        };
        let lines = |events: &[AuditEvent]| {
            let mut l = crate::AuditBatch::new();
            events.iter().for_each(|e| l.push(&e.borrowed()));
            l
        };
        let mut appender = t.store.audit_appender();
        let first: Vec<AuditEvent> = (0..40).map(|i| ev(&format!("a{i}"))).collect();
        let (back, r) = appender.append(lines(&first)).await;
        r.unwrap();
        assert_eq!(back, lines(&first));
        let refused = vec![ev("b0"), ev("boom"), ev("b2")];
        let (back, r) = appender.append(lines(&refused)).await;
        assert!(r.is_err());
        assert_eq!(
            back,
            lines(&refused),
            "a refused batch must come back whole"
        );
        let third: Vec<AuditEvent> = (0..3).map(|i| ev(&format!("c{i}"))).collect();
        let (_, r) = appender.append(lines(&third)).await;
        r.unwrap();
        let all = AuditQuery {
            limit: 1000,
            ..Default::default()
        };
        let stored = t.store.query_audit(&all).await.unwrap();
        assert_eq!(stored, [first, third].concat());
        t
    })
    .await;
}

/// Schema v8 moves the events stored one per row into segments: every field, null and odd
/// character kept, in order, readable through the `audit_events` view too.
#[tokio::test]
async fn stored_audit_rows_move_into_segments_whole() {
    use sqlx::Row;
    for engine in crate::testing::engines() {
        let t = TempStore::at_version(engine, 7).await.unwrap();
        let odd = "q\"uote b\\ack n\nl José 🗝 ]},[";
        let insert = "INSERT INTO audit_events (ts_ms, request_id, route, method, outcome, reason, subject, credential_id, ip) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        // ts_ms, request_id, route, method, outcome, reason, subject
        type Row<'a> = (
            i64,
            String,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
        );
        let rows: Vec<Row> = vec![
            (
                1_795_868_261_042,
                "r1".into(),
                Some("/api/"),
                Some("api_key"),
                "success",
                None,
                Some("svc"),
            ),
            (
                1_795_868_261_007,
                odd.into(),
                Some(odd),
                None,
                "failure",
                Some("bad_password"),
                Some(odd),
            ),
            (
                0,
                "r3".into(),
                None,
                Some("digest"),
                "throttled",
                Some("rate_limited"),
                None,
            ),
            (
                951_782_400_999,
                "r4".into(),
                Some("/"),
                Some("mtls"),
                "forbidden",
                Some("missing_scope"),
                Some("s"),
            ),
        ];
        for (ts, id, route, method, outcome, reason, subject) in &rows {
            crate::with_pool!(t.store, p => sqlx::query(insert)
                .bind(ts).bind(id).bind(route).bind(method).bind(outcome).bind(reason)
                .bind(subject).bind(subject.map(|s| format!("key_{s}"))).bind(Some("2001:db8::7"))
                .execute(p).await.map(|_| ()))
            .unwrap();
        }
        t.store.migrate().await.unwrap();
        let back = t
            .store
            .query_audit(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let expect: Vec<AuditEvent> = rows
            .iter()
            .map(
                |(ts, id, route, method, outcome, reason, subject)| AuditEvent {
                    ts_ms: *ts,
                    request_id: id.clone(),
                    route: route.map(Into::into),
                    method: method.map(|m| m.parse().unwrap()),
                    outcome: Outcome::parse(outcome).unwrap(),
                    reason: reason.map(Into::into),
                    subject: subject.map(Into::into),
                    credential_id: subject.map(|s| format!("key_{s}").into()),
                    ip: Some("2001:db8::7".into()),
                    management: None,
                    cert_source: None,
                },
            )
            .collect();
        assert_eq!(back, expect, "{engine}");
        // New events follow the moved ones; the view shows both, one row per event.
        t.store.insert_audit(&expect[..1]).await.unwrap();
        let view: Vec<(String, String, Option<String>)> = crate::with_pool!(t.store, p => {
            sqlx::query("SELECT request_id, ts, subject FROM audit_events ORDER BY id")
                .fetch_all(p)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        });
        let ids: Vec<&str> = view.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, ["r1", odd, "r3", "r4", "r1"], "{engine}");
        assert_eq!(view[1].1, "2026-11-28T12:17:41.007Z", "{engine}");
        assert_eq!(view[3].1, "2000-02-29T00:00:00.999Z", "{engine}");
        assert_eq!(view[1].2.as_deref(), Some(odd), "{engine}");
        t.cleanup().await;
    }
}

/// The `audit_events` view reads the compact segments of schema v9: one row per event, every
/// column what the event's reference §7 document holds — odd text, nulls, events of several
/// shared parts interleaved — and ids in the trail's order, as the store's reader gives them.
#[tokio::test]
async fn the_audit_events_view_reads_compact_segments() {
    use sqlx::Row;
    each_engine(|t| async move {
        let odd = "q\"uote b\\ack n\nl c\u{1}trl José 🗝 ]},[ null $.x[0]";
        let base = AuditEvent {
            ts_ms: 1_795_868_261_007,
            request_id: "r".into(),
            route: Some("/api/".into()),
            method: Some(Method::ApiKey),
            outcome: Outcome::Success,
            reason: None,
            subject: Some("svc".into()),
            credential_id: Some("key_1".into()),
            ip: Some("127.0.0.1".into()), management: None, cert_source: None, };
        let kinds = [
            base.clone(),
            AuditEvent {
                route: Some(odd.into()),
                method: None,
                outcome: Outcome::Failure,
                reason: Some(odd.into()),
                subject: None,
                credential_id: None,
                ip: Some("2001:db8::7".into()),
                ..base.clone()
            },
            AuditEvent {
                route: None,
                method: Some(Method::Digest),
                outcome: Outcome::Throttled,
                reason: Some("rate_limited".into()),
                subject: Some(odd.into()),
                credential_id: Some(odd.into()),
                ip: None,
                ..base.clone()
            },
        ];
        let events: Vec<AuditEvent> = (0..30usize)
            .map(|i| AuditEvent {
                ts_ms: 951_782_400_000 + (i as i64 * 37_000_123) % 1_000_000_000,
                request_id: format!("{odd}{i}"),
                ..kinds[(i * 5 + i / 4) % kinds.len()].clone()
            })
            .collect();
        t.store.insert_audit(&events[..10]).await.unwrap();
        t.store.insert_audit(&events[10..]).await.unwrap();
        type ViewRow = (
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let view: Vec<ViewRow> = crate::with_pool!(t.store, p => {
            sqlx::query(
                "SELECT id, ts, request_id, route, method, outcome, reason, subject, credential_id, ip \
                 FROM audit_events ORDER BY id",
            )
            .fetch_all(p)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6),
                    r.get(7), r.get(8), r.get(9),
                )
            })
            .collect()
        });
        let stored = t
            .store
            .query_audit_ids(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let expect: Vec<ViewRow> = stored
            .iter()
            .map(|(id, e)| {
                let mut ts = Vec::new();
                keycard_core::time::write_rfc3339_millis(&mut ts, e.ts_ms);
                (
                    *id,
                    String::from_utf8(ts).unwrap(),
                    e.request_id.clone(),
                    e.route.as_deref().map(Into::into),
                    e.method.map(|m| m.as_str().into()),
                    e.outcome.as_str().into(),
                    e.reason.clone(),
                    e.subject.as_deref().map(Into::into),
                    e.credential_id.as_deref().map(Into::into),
                    e.ip.clone(),
                )
            })
            .collect();
        assert!(
            stored.iter().map(|(_, e)| e).eq(events.iter()),
            "the store's reader"
        );
        assert_eq!(view, expect);
        assert_eq!(view[3].1, "2000-03-01T06:50:00.369Z");
        t
    })
    .await;
}

/// Paging back crosses segments (one per batch here, more than one query reads) and finds
/// every event once, newest page first; `since` skips whole older segments.
#[tokio::test]
async fn audit_pages_run_back_across_segments() {
    each_engine(|t| async move {
        let ev = |i: i64| AuditEvent {
            ts_ms: 1_000 * i,
            request_id: format!("r{i}"),
            route: None,
            method: None,
            outcome: Outcome::Failure,
            reason: Some("no_credential".into()),
            subject: None,
            credential_id: None,
            ip: None,
            management: None,
            cert_source: None,
        };
        for batch in 0..7 {
            let events: Vec<AuditEvent> = (0..3).map(|i| ev(batch * 3 + i)).collect();
            t.store.insert_audit(&events).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = t
                .store
                .query_audit_ids(&AuditQuery {
                    limit: 2,
                    before_id: before,
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.windows(2).all(|w| w[0].0 < w[1].0));
            before = page.first().map(|(id, _)| *id);
            seen.splice(0..0, page.into_iter().map(|(_, e)| e.ts_ms / 1000));
        }
        assert_eq!(seen, (0..21).collect::<Vec<_>>());
        // One query reading every segment (more than it fetches at a time).
        let all = t
            .store
            .query_audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let got: Vec<i64> = all.iter().map(|e| e.ts_ms / 1000).collect();
        assert_eq!(got, (0..21).collect::<Vec<_>>());
        let recent = t
            .store
            .query_audit(&AuditQuery {
                limit: 100,
                since_ms: Some(16_000),
                ..Default::default()
            })
            .await
            .unwrap();
        let got: Vec<i64> = recent.iter().map(|e| e.ts_ms / 1000).collect();
        assert_eq!(got, [16, 17, 18, 19, 20]);
        t
    })
    .await;
}

#[tokio::test]
async fn audit_round_trip_and_filters() {
    each_engine(|t| async move {
        let ev = |i: i64, subject: &str, outcome| AuditEvent {
            ts_ms: 1_000 * i,
            request_id: format!("r{i}"),
            route: Some("/api/".into()),
            method: Some(Method::ApiKey),
            outcome,
            reason: None,
            subject: Some(subject.into()),
            credential_id: Some("key_1".into()),
            ip: Some("127.0.0.1".into()),
            management: None,
            cert_source: None,
        };
        let events: Vec<AuditEvent> = (1..=1200)
            .map(|i| {
                ev(
                    i,
                    if i % 2 == 0 { "even" } else { "odd" },
                    if i % 3 == 0 {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    },
                )
            })
            .collect();
        t.store.insert_audit(&events).await.unwrap();
        let all = t
            .store
            .query_audit(&AuditQuery {
                limit: 5000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all, events);
        let q = AuditQuery {
            since_ms: Some(1_190_000),
            subject: Some("even".into()),
            outcome: Some(Outcome::Failure),
            limit: 100,
            before_id: None,
        };
        let got: Vec<String> = t
            .store
            .query_audit(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.request_id)
            .collect();
        assert_eq!(got, ["r1194", "r1200"]);
        // Paging back: the page before the smallest id of a page.
        let page1 = t
            .store
            .query_audit_ids(&AuditQuery {
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        let cursor = page1.iter().map(|(id, _)| *id).min().unwrap();
        let page2 = t
            .store
            .query_audit_ids(&AuditQuery {
                limit: 3,
                before_id: Some(cursor),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page2.len(), 3);
        assert!(page2.iter().all(|(id, _)| *id < cursor));
        let (n, m) = (events.len(), page2.len());
        assert_eq!(
            page2.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            events[n - 6..n - 6 + m].to_vec()
        );
        let newest = t
            .store
            .query_audit(&AuditQuery {
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            newest
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r1199", "r1200"]
        );
        t
    })
    .await;
}

#[tokio::test]
async fn migrating_twice_is_harmless_and_last_used_only_moves_forward() {
    each_engine(|t| async move {
        t.store.migrate().await.unwrap();
        crate::Store::open(&t.url).await.unwrap().close().await;
        t.store
            .create_api_key(&key("key_1", "svc", 1, 100))
            .await
            .unwrap();
        t.store
            .touch_last_used(&[("key_1".into(), 500)])
            .await
            .unwrap();
        t.store
            .touch_last_used(&[("key_1".into(), 400)])
            .await
            .unwrap();
        assert_eq!(
            t.store.get_api_key("key_1").await.unwrap().last_used_at,
            Some(500)
        );
        t
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_postgres_is_an_unavailable_error() {
    let s = crate::Store::connect("postgres://postgres@127.0.0.1:1/none").unwrap();
    let e = s.find_api_key(&[0; 32]).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

fn code(hash: u8, grant: &str, now: i64) -> crate::CodeRow {
    crate::CodeRow {
        code_hash: vec![hash; 32],
        grant_id: grant.into(),
        client_id: "web".into(),
        subject: "alice".into(),
        redirect_uri: "https://app.example/cb".into(),
        scopes: "openid".into(),
        audience: "http://kc".into(),
        code_challenge: "c".repeat(43),
        nonce: Some("n".into()),
        auth_time: now,
        expires_at: now + 60,
        session_id: None,
    }
}

fn grant(id: &str, now: i64) -> crate::GrantRow {
    crate::GrantRow {
        grant_id: id.into(),
        client_id: "web".into(),
        subject: "alice".into(),
        scopes: "openid".into(),
        audience: "http://kc".into(),
        auth_time: now,
        created_at: now,
        expires_at: now + 1000,
        revoked_at: None,
        session_id: None,
    }
}

fn issued(refresh: u8, jti: &str, exp: i64) -> crate::Issued {
    crate::Issued {
        refresh_hash: Some(vec![refresh; 32]),
        jti: jti.into(),
        access_expires_at: exp,
    }
}

#[tokio::test]
async fn clients_codes_and_refresh_families() {
    use crate::{ClientRow, Redeemed, Rotated};
    each_engine(|t| async move {
        let s = &t.store;
        let client = ClientRow {
            client_id: "web".into(),
            secret_hash: Some(vec![9; 32]),
            auth_method: "client_secret_basic".into(),
            redirect_uris: vec![
                "https://app.example/cb".into(),
                "http://127.0.0.1/cb".into(),
            ],
            grants: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: "openid orders:read".into(),
            first_party: false,
            created_at: 100,
            revoked_at: None,
            tls_subject_dn: None,
            cert_fingerprint: None,
        };
        s.create_client(&client).await.unwrap();
        let mtls_client = ClientRow {
            client_id: "svc".into(),
            secret_hash: None,
            auth_method: "tls_client_auth".into(),
            tls_subject_dn: Some("CN=svc,O=Example".into()),
            cert_fingerprint: Some("ab".repeat(32)),
            grants: vec!["client_credentials".into()],
            redirect_uris: Vec::new(),
            ..client.clone()
        };
        s.create_client(&mtls_client).await.unwrap();
        assert_eq!(s.find_client("svc").await.unwrap(), Some(mtls_client));
        assert!(matches!(
            s.create_client(&client).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.find_client("web").await.unwrap().unwrap(), client);
        assert_eq!(s.list_clients().await.unwrap().len(), 2);
        let before = s.latest_revision().await.unwrap();

        // A code redeems once; both racing redemptions cannot win.
        s.insert_code(&code(1, "gr_1", 100)).await.unwrap();
        // Another client's presentation neither spends it nor revokes anything.
        assert_eq!(
            s.redeem_code(&[1; 32], "other", 105).await.unwrap(),
            Redeemed::WrongClient
        );
        let (a, b) = tokio::join!(
            s.redeem_code(&[1; 32], "web", 110),
            s.redeem_code(&[1; 32], "web", 110)
        );
        let wins = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Ok(Redeemed::Code(_))))
            .count();
        assert_eq!(wins, 1, "{a:?} {b:?}");
        assert_eq!(
            s.redeem_code(&[7; 32], "web", 110).await.unwrap(),
            Redeemed::Unknown
        );

        // Tokens of the grant; then the code again: the grant and its access tokens revoked.
        s.start_grant(&grant("gr_1", 110), &issued(2, "at_1", 700))
            .await
            .unwrap();
        // A used code presented by another client revokes nothing either.
        assert_eq!(
            s.redeem_code(&[1; 32], "other", 115).await.unwrap(),
            Redeemed::WrongClient
        );
        assert!(s.revoked_tokens(115).await.unwrap().is_empty());
        assert!(matches!(
            s.redeem_code(&[1; 32], "web", 120).await.unwrap(),
            Redeemed::Reused { .. }
        ));
        assert_eq!(
            s.revoked_tokens(120).await.unwrap(),
            vec![("at_1".to_owned(), 700)]
        );
        let (g, used) = s.find_refresh(&[2; 32], 0).await.unwrap().unwrap();
        assert!(g.revoked_at.is_some() && !used);
        assert_eq!(
            s.rotate_refresh(&[2; 32], "web", &issued(3, "at_2", 800), 130, 0)
                .await
                .unwrap(),
            Rotated::Invalid
        );
        let kinds: Vec<ChangeKind> = s
            .changes_since(before, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, vec![ChangeKind::Token]);

        // Rotation: the new token works, the old one revokes the family.
        s.start_grant(&grant("gr_2", 200), &issued(4, "at_3", 800))
            .await
            .unwrap();
        assert!(matches!(
            s.rotate_refresh(&[4; 32], "web", &issued(5, "at_4", 900), 210, 0)
                .await
                .unwrap(),
            Rotated::Grant(_)
        ));
        // Another client's rotation changes nothing.
        assert_eq!(
            s.rotate_refresh(&[5; 32], "other", &issued(6, "at_5", 900), 211, 0)
                .await
                .unwrap(),
            Rotated::Invalid
        );
        assert!(matches!(
            s.rotate_refresh(&[4; 32], "web", &issued(7, "at_6", 900), 220, 0)
                .await
                .unwrap(),
            Rotated::Reused { .. }
        ));
        assert_eq!(
            s.rotate_refresh(&[5; 32], "web", &issued(8, "at_7", 900), 221, 0)
                .await
                .unwrap(),
            Rotated::Invalid,
            "the family is revoked"
        );
        let revoked: Vec<String> = s
            .revoked_tokens(220)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert!(revoked.contains(&"at_3".to_owned()) && revoked.contains(&"at_4".to_owned()));

        // Past the grant's absolute lifetime nothing rotates.
        s.start_grant(&grant("gr_3", 300), &issued(10, "at_8", 900))
            .await
            .unwrap();
        assert_eq!(
            s.rotate_refresh(&[10; 32], "web", &issued(11, "at_9", 2000), 1300, 0)
                .await
                .unwrap(),
            Rotated::Invalid
        );

        // Access-token revocation is idempotent; pruning forgets expired rows.
        s.revoke_access_token("at_x", 500, 400).await.unwrap();
        s.revoke_access_token("at_x", 500, 401).await.unwrap();
        s.prune_oauth(10_000).await.unwrap();
        assert!(s.revoked_tokens(0).await.unwrap().is_empty());

        // Consent and client revocation.
        assert_eq!(s.consent("alice", "web").await.unwrap(), None);
        s.set_consent("alice", "web", "openid", 100).await.unwrap();
        s.set_consent("alice", "web", "openid orders:read", 101)
            .await
            .unwrap();
        assert_eq!(
            s.consent("alice", "web").await.unwrap().as_deref(),
            Some("openid orders:read")
        );
        s.revoke_client("web", 500).await.unwrap();
        assert_eq!(
            s.find_client("web").await.unwrap().unwrap().revoked_at,
            Some(500)
        );
        assert!(matches!(
            s.revoke_client("ghost", 500).await,
            Err(StoreError::NotFound { .. })
        ));
        t
    })
    .await;
}

/// A user `alice` with a placeholder hash.
fn alice() -> NewUser {
    NewUser {
        name: "alice".into(),
        password_id: "pwd_1".into(),
        password_hash: "$argon2id$x".into(),
        digest_sealed: None,
        scopes: String::new(),
        created_at: 1,
    }
}

#[tokio::test]
async fn sessions_end_with_logout_and_with_every_change_of_credentials() {
    use crate::{Ended, Rotated, SessionRow};
    each_engine(|t| async move {
        let s = &t.store;
        s.create_user(&alice()).await.unwrap();
        let session = |n: u8, id: &str| SessionRow {
            session_hash: vec![n; 32],
            session_id: id.into(),
            subject: "alice".into(),
            credential_tag: "t".into(),
            auth_time: 100,
            expires_at: 1000,
        };
        assert!(
            s.start_session(&session(1, "ss_1"), "pwd_1", None)
                .await
                .unwrap()
        );
        assert!(
            s.start_session(&session(2, "ss_2"), "pwd_1", None)
                .await
                .unwrap()
        );
        // Checked against credentials the store no longer holds: no session.
        assert!(
            !s.start_session(&session(8, "ss_8"), "pwd_0", None)
                .await
                .unwrap()
        );
        assert!(
            !s.start_session(&session(8, "ss_8"), "pwd_1", Some(b"seed"))
                .await
                .unwrap()
        );
        assert_eq!(s.find_session(&[8; 32], 500).await.unwrap(), None);
        assert_eq!(
            s.find_session(&[1; 32], 500).await.unwrap(),
            Some(session(1, "ss_1"))
        );
        assert_eq!(
            s.find_session(&[1; 32], 1000).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(s.find_session(&[9; 32], 500).await.unwrap(), None);

        // Logout ends one session and the grants made in it, not the other session's.
        let in_session = |id: &str, sess: &str| crate::GrantRow {
            session_id: Some(sess.into()),
            ..grant(id, 100)
        };
        s.start_grant(&in_session("gr_1", "ss_1"), &issued(11, "at_1", 900))
            .await
            .unwrap();
        s.start_grant(&in_session("gr_2", "ss_2"), &issued(12, "at_2", 900))
            .await
            .unwrap();
        assert_eq!(
            s.end_session(&[1; 32], 200).await.unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            s.end_session(&[1; 32], 201).await.unwrap(),
            None,
            "ended once"
        );
        assert_eq!(s.find_session(&[1; 32], 202).await.unwrap(), None);
        assert!(s.find_session(&[2; 32], 202).await.unwrap().is_some());
        assert_eq!(
            s.rotate_refresh(&[11; 32], "web", &issued(13, "at_3", 900), 203, 0)
                .await
                .unwrap(),
            Rotated::Invalid
        );
        let grants: Vec<String> = s
            .list_grants("alice", 203)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.grant_id)
            .collect();
        assert_eq!(grants, vec!["gr_2".to_owned()]);
        assert!(
            s.revoked_tokens(203)
                .await
                .unwrap()
                .contains(&("at_1".to_owned(), 900))
        );

        // A code issued in the ended session grants nothing; one of the live session does.
        let in_ended = crate::CodeRow {
            session_id: Some("ss_1".into()),
            ..code(40, "gr_40", 200)
        };
        s.insert_code(&in_ended).await.unwrap();
        assert_eq!(
            s.redeem_code(&[40; 32], "web", 205).await.unwrap(),
            crate::Redeemed::SessionEnded
        );
        let in_live = crate::CodeRow {
            session_id: Some("ss_2".into()),
            ..code(41, "gr_41", 200)
        };
        s.insert_code(&in_live).await.unwrap();
        assert!(matches!(
            s.redeem_code(&[41; 32], "web", 205).await.unwrap(),
            crate::Redeemed::Code(_)
        ));

        // A refresh token unused since before the idle limit is refused, and left unspent.
        assert_eq!(
            s.rotate_refresh(&[12; 32], "web", &issued(14, "at_4", 900), 204, 150)
                .await
                .unwrap(),
            Rotated::Invalid
        );
        assert!(!s.find_refresh(&[12; 32], 0).await.unwrap().unwrap().1);
        assert!(
            s.find_refresh(&[12; 32], 150).await.unwrap().unwrap().1,
            "idle: spent"
        );

        // A new password ends every session and grant; so do a new second factor and
        // disabling; `user logout` does it on its own.
        s.set_password("alice", "pwd_2", "$argon2id$y", None, 300)
            .await
            .unwrap();
        assert_eq!(s.find_session(&[2; 32], 301).await.unwrap(), None);
        assert!(s.list_grants("alice", 301).await.unwrap().is_empty());
        for (n, change) in [(3u8, "totp"), (4, "disable"), (5, "logout")] {
            let id = format!("ss_{n}");
            // Enabled again after "disable"; enrolled in TOTP from "totp" on.
            s.set_subject_disabled("alice", false, 399).await.unwrap();
            let sealed: Option<&[u8]> = (change != "totp").then_some(b"sealed".as_slice());
            assert!(
                s.start_session(&session(n, &id), "pwd_2", sealed)
                    .await
                    .unwrap(),
                "{change}"
            );
            s.start_grant(
                &in_session(&format!("gr_{n}"), &id),
                &issued(20 + n, &format!("at_{n}0"), 900),
            )
            .await
            .unwrap();
            match change {
                "totp" => s.set_totp("alice", b"sealed", 400).await.unwrap(),
                "disable" => s.set_subject_disabled("alice", true, 400).await.unwrap(),
                _ => {
                    assert_eq!(
                        s.end_user_sessions("alice", 400).await.unwrap(),
                        Ended {
                            sessions: 1,
                            grants: 1
                        }
                    );
                }
            }
            assert_eq!(
                s.find_session(&[n; 32], 401).await.unwrap(),
                None,
                "{change}"
            );
            assert!(
                s.list_grants("alice", 401).await.unwrap().is_empty(),
                "{change}"
            );
        }
        assert!(matches!(
            s.end_user_sessions("ghost", 400).await,
            Err(StoreError::NotFound { .. })
        ));

        // One grant revoked by id, only for its own subject.
        s.start_grant(&grant("gr_9", 500), &issued(30, "at_90", 900))
            .await
            .unwrap();
        assert!(!s.revoke_grant("bob", "gr_9", 501).await.unwrap());
        assert!(s.revoke_grant("alice", "gr_9", 501).await.unwrap());
        assert!(!s.revoke_grant("alice", "gr_9", 502).await.unwrap());
        t
    })
    .await;
}

#[tokio::test]
async fn totp_steps_are_used_once_and_only_forward() {
    each_engine(|t| async move {
        let s = &t.store;
        s.create_user(&alice()).await.unwrap();
        assert!(!s.use_totp_step("alice", 5).await.unwrap(), "not enrolled");
        s.set_totp("alice", &[1, 2, 3], 2).await.unwrap();
        assert_eq!(
            s.get_user("alice").await.unwrap().totp_sealed,
            Some(vec![1, 2, 3])
        );
        assert!(s.use_totp_step("alice", 5).await.unwrap());
        assert!(
            !s.use_totp_step("alice", 5).await.unwrap(),
            "the same step twice"
        );
        assert!(
            !s.use_totp_step("alice", 4).await.unwrap(),
            "an earlier step"
        );
        assert!(s.use_totp_step("alice", 6).await.unwrap());
        assert!(matches!(
            s.set_totp("bob", &[1], 3).await,
            Err(StoreError::NotFound { .. })
        ));
        t
    })
    .await;
}

#[tokio::test]
async fn hmac_keys_lifecycle() {
    use crate::NewHmacKey;
    each_engine(|t| async move {
        let s = &t.store;
        let before = s.latest_revision().await.unwrap();
        let key = NewHmacKey {
            id: "hmac_1".into(),
            key_id: "hk_1".into(),
            subject: "signer".into(),
            lookup: [5; 32],
            sealed: vec![1, 2, 3, 4],
            alg: None,
            scopes: "orders:read".into(),
            created_at: 100,
            expires_at: Some(10_000),
        };
        s.create_hmac_key(&key).await.unwrap();
        assert!(!format!("{key:?}").contains("[1, 2, 3, 4]"));
        let row = s.find_hmac_key(&[5; 32]).await.unwrap().unwrap();
        assert_eq!(
            (row.key_id.as_str(), row.sealed.as_slice()),
            ("hk_1", &[1u8, 2, 3, 4][..])
        );
        assert!(!format!("{row:?}").contains("[1, 2, 3, 4]"));
        // An HMAC key is not an API key, whatever its lookup.
        assert!(s.find_api_key(&[5; 32]).await.unwrap().is_none());
        assert_eq!(s.list_hmac_keys(Some("signer")).await.unwrap().len(), 1);
        assert!(s.list_hmac_keys(Some("other")).await.unwrap().is_empty());
        s.revoke_credential(CredentialKind::Hmac, "hk_1", 200)
            .await
            .unwrap();
        assert_eq!(
            s.find_hmac_key(&[5; 32]).await.unwrap().unwrap().revoked_at,
            Some(200)
        );
        assert!(matches!(
            s.revoke_credential(CredentialKind::Hmac, "hmac_1", 201)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.revoke_credential(CredentialKind::Hmac, "nope", 201).await,
            Err(StoreError::NotFound { .. })
        ));
        let kinds: Vec<ChangeKind> = s
            .changes_since(before, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, vec![ChangeKind::Credential, ChangeKind::Credential]);
        t
    })
    .await;
}

#[tokio::test]
async fn cert_bindings_one_active_per_certificate() {
    use crate::NewCertBinding;
    each_engine(|t| async move {
        let s = &t.store;
        let before = s.latest_revision().await.unwrap();
        let binding = |id: &str, now| NewCertBinding {
            id: id.into(),
            subject: "svc-a".into(),
            fingerprint: "ab".repeat(32),
            lookup: [9; 32],
            scopes: "orders:read".into(),
            created_at: now,
            expires_at: None,
        };
        s.create_cert_binding(&binding("cert_1", 100))
            .await
            .unwrap();
        let row = s.find_cert_binding(&[9; 32]).await.unwrap().unwrap();
        assert_eq!((row.id.as_str(), row.subject.as_str()), ("cert_1", "svc-a"));
        assert_eq!(row.fingerprint, "ab".repeat(32));
        // Not an API key, whatever its lookup.
        assert!(s.find_api_key(&[9; 32]).await.unwrap().is_none());
        // The same certificate twice: refused while the first binding is active.
        assert!(matches!(
            s.create_cert_binding(&binding("cert_2", 110)).await,
            Err(StoreError::Conflict(_))
        ));
        s.revoke_credential(CredentialKind::Cert, "cert_1", 200)
            .await
            .unwrap();
        assert!(matches!(
            s.revoke_credential(CredentialKind::Cert, "cert_1", 201)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.revoke_credential(CredentialKind::Cert, "nope", 201).await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(
            s.find_cert_binding(&[9; 32])
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(200)
        );
        // Bound again after the revocation: the new binding is the one found.
        s.create_cert_binding(&binding("cert_3", 300))
            .await
            .unwrap();
        let row = s.find_cert_binding(&[9; 32]).await.unwrap().unwrap();
        assert_eq!((row.id.as_str(), row.revoked_at), ("cert_3", None));
        assert_eq!(s.list_cert_bindings().await.unwrap().len(), 2);
        let changes = s.changes_since(before, 10).await.unwrap();
        assert_eq!(changes.len(), 3);
        t
    })
    .await;
}
