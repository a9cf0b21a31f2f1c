use super::*;

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn authenticator(token_line: &str) -> Authenticator {
    let hash = hash_password("pw").unwrap();
    let text = format!(
        r#"{{"anonymous": ["read"], "users": [
            {{"name": "admin", "password": "{hash}", "permissions": ["read", "write", "admin", "upgrade"]}},
            {{"name": "app", "tokens": ["{token_line}"], "certificate_names": ["app-client"],
              "permissions": ["read", "write"], "prefixes": ["app/"]}}
        ]}}"#
    );
    Authenticator::new(Users::parse(&text, false).unwrap()).unwrap()
}

async fn who(auth: &Authenticator, c: Credentials<'_>) -> Result<String, AuthError> {
    auth.authenticate(c).await.map(|c| c.name().to_string())
}

#[tokio::test]
async fn each_kind_of_credential_names_its_user() {
    let (token, line) = new_token().unwrap();
    let auth = authenticator(&line);
    let good = basic("admin", "pw");
    let bearer = format!("Bearer {token}");
    let cases: Vec<(Credentials<'_>, &str)> = vec![
        (Credentials::default(), "anonymous"),
        (
            Credentials {
                authorization: Some(&good),
                ..Default::default()
            },
            "admin",
        ),
        (
            Credentials {
                authorization: Some(&bearer),
                ..Default::default()
            },
            "app",
        ),
        (
            Credentials {
                certificate_names: vec!["unknown".into(), "app-client".into()],
                ..Default::default()
            },
            "app",
        ),
        (
            Credentials {
                forwarded_user: Some("admin"),
                ..Default::default()
            },
            "admin",
        ),
    ];
    for (c, expected) in cases {
        assert_eq!(who(&auth, c).await.unwrap(), expected);
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_look_the_same() {
    let auth = authenticator(&new_token().unwrap().1);
    let mut answers = Vec::new();
    for value in [
        basic("admin", "wrong"),
        basic("nobody", "pw"),
        basic("app", ""),
    ] {
        let c = Credentials {
            authorization: Some(&value),
            ..Default::default()
        };
        answers.push(who(&auth, c).await.unwrap_err());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(
        answers[0],
        AuthError::Unauthenticated(BAD_PASSWORD.to_string())
    );
    for bad in ["Bearer rwt_nope", "Digest x", "Basic !!!"] {
        let c = Credentials {
            authorization: Some(bad),
            ..Default::default()
        };
        assert!(matches!(
            who(&auth, c).await,
            Err(AuthError::Unauthenticated(_))
        ));
    }
}

#[tokio::test]
async fn permissions_and_prefixes_are_enforced() {
    let (token, line) = new_token().unwrap();
    let auth = authenticator(&line);
    let bearer = format!("Bearer {token}");
    let app = auth
        .authenticate(Credentials {
            authorization: Some(&bearer),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(app.allow(Permission::Write, Scope::Key("app/x")).is_ok());
    assert!(app
        .allow(Permission::Read, Scope::Scan(Some("app/")))
        .is_ok());
    for (p, scope) in [
        (Permission::Write, Scope::Key("other/x")),
        (Permission::Read, Scope::Scan(None)),
        (Permission::Write, Scope::AnyKey),
        (Permission::Admin, Scope::Cluster),
        (Permission::Upgrade, Scope::Cluster),
    ] {
        assert!(
            matches!(app.allow(p, scope), Err(AuthError::Denied(_))),
            "{p} {scope:?}"
        );
    }
    let anonymous = auth.authenticate(Credentials::default()).await.unwrap();
    assert!(anonymous.allow(Permission::Read, Scope::Key("k")).is_ok());
    assert!(matches!(
        anonymous.allow(Permission::Upgrade, Scope::Cluster),
        Err(AuthError::Unauthenticated(_))
    ));
    let open = Authenticator::default()
        .authenticate(Credentials::default())
        .await
        .unwrap();
    assert!(open.allow(Permission::Upgrade, Scope::Cluster).is_ok());
}
