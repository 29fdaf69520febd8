//! WarpDrive's control API without the server (doc/API.md, doc/openapi.yaml): the request
//! and answer types ([`api`], with the route table) and the client ([`client`]) that
//! `warpdrive-ctl` talks to a daemon with, over its Unix socket or TCP. Nothing here needs
//! the filesystem core or the stores: the server lives in `warpdrive-control`.

pub mod api;
pub mod client;
