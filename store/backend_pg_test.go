package store

var backends = []backend{sqliteBackend}
