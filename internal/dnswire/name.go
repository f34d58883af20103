package dnswire

// AppendNameText appends the presentation form of the uncompressed wire
// name to dst ("www.example.com."; "." for the root), escaping dots,
// backslashes and bytes outside printable ASCII inside labels as RFC 1035
// does (\. \\ \DDD). A name that runs short ends where its bytes do.
func AppendNameText(dst, name []byte) []byte {
	if len(name) == 0 || name[0] == 0 {
		return append(dst, '.')
	}
	for i := 0; i < len(name) && name[i] != 0; {
		n := int(name[i])
		i++
		for _, c := range name[i:min(i+n, len(name))] {
			switch {
			case c == '.' || c == '\\':
				dst = append(dst, '\\', c)
			case c < '!' || c > '~':
				dst = append(dst, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
			default:
				dst = append(dst, c)
			}
		}
		dst = append(dst, '.')
		i += n
	}
	return dst
}
