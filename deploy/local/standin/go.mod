module dittofs-operator/deploy/local/standin

go 1.22
