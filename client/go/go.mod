module memguard.dev/memguard

go 1.19
