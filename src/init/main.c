/* placeholder: hutch-init */
int main(void) { return 0; }
