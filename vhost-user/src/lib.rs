//! vhost-user protocol, guest memory and virtqueues.
