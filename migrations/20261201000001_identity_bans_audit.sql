-- Identity from the shop's OpenID Connect provider, bans, and the admin
-- audit trail (DESIGN.md §10).
--
-- A user is an identity of an issuer: (issuer, subject). Users of the
-- development login and of operator tokens minted from the shell have the
-- issuer 'local' and their email as subject; users of the shop's provider
-- have its issuer URL and the token's `sub`. The email is only a label
-- (a provider may send none, and two providers may send the same one).
alter table users
    add column issuer text,
    add column subject text,
    -- Set while the account is suspended: every token of the user is
    -- refused and the worker releases the user's pending reservations.
    add column banned_at timestamptz,
    -- Tokens issued before this instant are void (set by every ban and kept
    -- by the unban, so tokens from before a ban never work again).
    add column tokens_valid_after timestamptz;

update users set issuer = 'local', subject = email;

alter table users
    alter column issuer set not null,
    alter column subject set not null,
    alter column email drop not null,
    drop constraint users_email_key,
    drop constraint users_email_normalized,
    add constraint users_identity_key unique (issuer, subject),
    add constraint users_identity_nonempty check (issuer <> '' and subject <> ''),
    add constraint users_email_normalized
        check (email is null or (email = lower(btrim(email)) and email like '%_@_%'));

-- What every API node loads to refuse revoked tokens: only users with a ban
-- or a void-before instant, a small set.
create index users_revoked_idx on users (id) include (banned_at, tokens_valid_after)
    where tokens_valid_after is not null;

-- Who did what, when: every admin action, written in the transaction of the
-- change it describes.
create table admin_audit (
    id            uuid primary key,
    at            timestamptz not null default now(),
    actor_id      uuid not null constraint admin_audit_actor_fkey references users (id),
    -- e.g. 'sale.create', 'sale.pause', 'user.ban'
    action        text not null,
    target_type   text not null,
    target_id     uuid not null,
    -- The request as the admin sent it (validated), and what changed.
    details       jsonb not null default '{}'::jsonb,
    request_id    text,
    constraint admin_audit_action_nonempty check (action <> '')
);

create index admin_audit_at_idx on admin_audit (at desc, id desc);
create index admin_audit_target_idx on admin_audit (target_id, at desc);
