module memguard.dev/outcome-go-service

go 1.19

require memguard.dev/memguard v0.0.0

replace memguard.dev/memguard => ../../../../client/go
