# kwctl's AdmissionResponse → the form of fixtures/expected/<case>.json: allowed, the JSON patch
# decoded with its operations sorted by path (the order of a diff's operations carries no meaning),
# and the warnings ([] when none). Shared by policy.bats and the waPC harness's expected files.
{
  allowed: .allowed,
  patch: (if .patch then (.patch | @base64d | fromjson | sort_by([.path, .op])) else [] end),
  warnings: (.warnings // [])
}
