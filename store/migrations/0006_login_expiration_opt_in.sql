-- Login expiration is for people who log in; every peer so far joined with
-- a setup key (a machine: a server, a routing peer), and such peers are
-- exempt unless an admin opts one in. Until this version the flag was on
-- for every new peer, so it records no admin's choice.
UPDATE peers SET login_expiration_enabled = 0;
