# run(expect_success expect_output COMMAND...), shared by the fmnist scripts CTest runs with
# cmake -P: runs the command (at most 10 minutes), fails the test when its exit status or its
# output (stdout and stderr together) is not what was expected, and leaves the output in
# last_output for further checks.
function(run expect_success expect_output)
  string(TIMESTAMP started "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 600)
  string(TIMESTAMP finished "%s")
  math(EXPR seconds "${finished} - ${started}")
  set(all "${out}${err}")
  if(expect_success AND NOT rc EQUAL 0)
    message(FATAL_ERROR "'${ARGN}' failed (${rc}):\n${all}")
  endif()
  if(NOT expect_success AND rc EQUAL 0)
    message(FATAL_ERROR "'${ARGN}' should have failed but exited 0:\n${all}")
  endif()
  if(NOT all MATCHES "${expect_output}")
    message(FATAL_ERROR "'${ARGN}': expected output matching '${expect_output}', found:\n${all}")
  endif()
  set(last_output "${all}" PARENT_SCOPE)
  message(STATUS "ok (${seconds} s): ${ARGN}")
endfunction()
