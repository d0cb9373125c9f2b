/* The cmkflow executable: everything lives in libcmkflow. */
int cmkflow_main(int argc, char **argv);

int main(int argc, char **argv) { return cmkflow_main(argc, argv); }
